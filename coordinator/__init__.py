"""The coordinator side: runs ceremonies for enrolled devices with the key the enclave pins."""
