"""The wallet SDK: wallets, parties and their ceremonies, transport, attestation and backups."""
