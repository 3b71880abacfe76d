"""devkms: a local stand-in for AWS KMS (docs/architecture.md, "The enclave boundary").

It plays "AWS's side" for machines without Nitro and KMS: a separate process
speaking the AWS KMS JSON 1.1 API subset the enclave uses (CreateKey,
DescribeKey, GenerateDataKey, Encrypt, Decrypt), releasing data keys to a
``Recipient`` only when its attestation document verifies against the
configured root and its PCRs satisfy the key policy. It imports no project
package but ``client`` (for the attestation verifier), as
tests/test_import_rules.py enforces.

Run it with ``python -m devkms --listen 127.0.0.1:0 --policy policy.json``.
"""
