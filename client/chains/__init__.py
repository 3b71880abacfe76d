"""Chain formats: Ethereum, Bitcoin and Solana transactions signed by wallets."""
