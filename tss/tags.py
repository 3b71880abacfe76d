"""Every domain-separation tag of the protocol core.

Tags fixed by a spec keep the spec's spelling so the public vectors pass; the
project's own tags start with "shardkeep/".

Each protocol keeps its tags in its own section below.
"""

from __future__ import annotations

### BIP-340 / BIP-445 (FROST3 signing)

FROST_TAG_AUX = "BIP0445/aux"
FROST_TAG_NONCE = "BIP0445/nonce"
FROST_TAG_NONCECOEF = "BIP0445/noncecoef"
FROST_TAG_DETERMINISTIC_NONCE = "BIP0445/deterministic/nonce"
BIP340_TAG_CHALLENGE = "BIP0340/challenge"
BIP341_TAG_TAPTWEAK = "TapTweak"
FROST_TAG_SESSION = "shardkeep/frost/session"
"""Label in front of the session id in NonceGen's extra_in (``frost.signer_round1``)."""
FROST_TAG_NONCE_CONTEXT = "shardkeep/frost/nonce-context"
"""Hash of what a signed round-1 nonce is for: session, key, message, signers, tweaks."""
FROST_SIGNED_NONCE_PREFIX = b"shardkeep/frost/signed nonce"
"""BIP-340 message prefix of a signer's host-key signature on its round-1 nonce."""
FROST_ED25519_SIGNED_COMMITMENT_PREFIX = b"shardkeep/ed25519 commitment"
"""BIP-340 message prefix of a host-key signature on an RFC 9591 round-1 commitment."""
ED25519_EXPORT_PREFIX = b"shardkeep/ed25519 export prefix"
"""SHA-512 prefix deriving an exported expanded Ed25519 secret's nonce prefix from its scalar."""

### ChillDKG (SimplPedPoP / EncPedPoP / CertEq)
# Spelled as in the ChillDKG draft BIP (reference util.py BIP_TAG + suffix); the
# Taproot tweak of the threshold key reuses BIP341_TAG_TAPTWEAK above.

DKG_TAG_VSS_COEFFS = "BIP DKG/vss coeffs"
DKG_TAG_POP = "BIP DKG/pop message"
"""Tag prefix of the proofs of possession: BIP-340 with "<prefix>/aux", "/nonce", "/challenge"."""
DKG_TAG_ENCPEDPOP_SEED = "BIP DKG/encpedpop seed"
DKG_TAG_SIMPLPEDPOP_AUX = "BIP DKG/simplpedpop aux"
DKG_TAG_ENCPEDPOP_SECNONCE = "BIP DKG/encpedpop secnonce"
DKG_TAG_ENCPEDPOP_ECDH = "BIP DKG/encpedpop ecdh"
DKG_TAG_SELF_PAD = "BIP DKG/encaps_multi self_pad"
DKG_TAG_PARAMS_HASH = "BIP DKG/params_hash"
DKG_CERTEQ_MSG_PREFIX = b"BIP DKG/certeq message"
"""Zero-padded to 33 bytes in front of CertEq signed messages (BIP-340 domain separation)."""
DKG_RECOVERY_ACK_MSG_PREFIX = b"BIP DKG/recovery acknowledgment"
"""Zero-padded to 33 bytes in front of recovery acknowledgment signed messages."""

# ChillDKG over edwards25519 (tss.dkg.suite): every tag above is used with this
# prefix ("shardkeep/ed25519 BIP DKG/vss coeffs", ...), and the signed-message
# prefixes below replace CertEq's and the recovery acknowledgment's, so no
# hash, certificate or recovery data of one group is valid in the other.
DKG_ED25519_TAG_PREFIX = "shardkeep/ed25519 "
DKG_ED25519_CERTEQ_MSG_PREFIX = b"shardkeep/ed25519 DKG certeq"
DKG_ED25519_RECOVERY_ACK_MSG_PREFIX = b"shardkeep/ed25519 DKG ack"

### DKLs23 (base OT, OT extension, multiplication, signing)

DKLS_TAG_SETUP_SID = "shardkeep/dkls23/setup/sid"
"""Session id of the pairwise setup ceremony (``tss.ecdsa.keygen``)."""
DKLS_TAG_SETUP_ID = "shardkeep/dkls23/setup/id"
"""Names one run of a pair's setup; both parties of the pair derive it (``tss.ecdsa.keygen``)."""
DKLS_TAG_KEY_ID = "shardkeep/dkls23/key-id"
"""Binds an ``EcdsaSetup`` to the keyring it was made for."""
DKLS_TAG_BASE_OT_H2C = "shardkeep/dkls23/base-ot/hash-to-curve"
"""Random oracle H_b onto the group in endemic OT (MR19 Fig. 8)."""
DKLS_TAG_BASE_OT_KEY = "shardkeep/dkls23/base-ot/key"
"""Random oracle turning a key-agreement point into a 32-byte base-OT message."""
DKLS_TAG_OTE_SID = "shardkeep/dkls23/ote/sid"
DKLS_TAG_OTE_PRG = "shardkeep/dkls23/ote/prg"
DKLS_TAG_OTE_CHI = "shardkeep/dkls23/ote/chi"
"""Fiat-Shamir challenge of the OT-extension consistency check (DKLs23 §5.1)."""
DKLS_TAG_OTE_ROW = "shardkeep/dkls23/ote/row"
"""Random oracle of the OT-extension 'transpose and randomise' step."""
DKLS_TAG_MUL_GADGET = "shardkeep/dkls23/rvole/gadget"
DKLS_TAG_MUL_THETA = "shardkeep/dkls23/rvole/theta"
DKLS_TAG_MUL_MU = "shardkeep/dkls23/rvole/mu"
DKLS_TAG_ZERO_COMMIT = "shardkeep/dkls23/zero/commit"
DKLS_TAG_ZERO_SHARE = "shardkeep/dkls23/zero/share"
DKLS_TAG_SIGN_SID = "shardkeep/dkls23/sign/sid"
DKLS_TAG_SIGN_PAIR_SID = "shardkeep/dkls23/sign/pair-sid"
DKLS_TAG_SIGN_NONCE = "shardkeep/dkls23/sign/nonce"
"""Derivation of the per-session secrets (r_i, phi_i, ...) from the caller's randomness."""
DKLS_TAG_SIGN_COMMIT = "shardkeep/dkls23/sign/commit"
DKLS_TAG_SIGN_ECHO = "shardkeep/dkls23/sign/echo"

### Enclave sealing (enclave/seal.py; not a hash tag: a label in AES-GCM's associated data)

SEAL_AAD_LABEL = b"shardkeep/sealed-share"
"""Leads the associated data of every sealed server share (docs/architecture.md)."""

### Key lifecycle (reshare, refresh, export, import, derivation)

KEYGEN_TAG_CHAIN_CODE = "shardkeep/keygen/chain-code"
"""The BIP-32 chain code agreed at keygen: the session context and every party's contribution."""
RESHARE_TAG_PLAN = "shardkeep/reshare/plan"
"""Hash of a reshare/refresh plan (session, old keyring, dealers, holders, t')."""
RESHARE_TAG_COEFFS = "shardkeep/reshare/coeffs"
"""Hedged derivation of a dealer's polynomial from its randomness, its share and the plan."""
RESHARE_TAG_ECHO = "shardkeep/reshare/echo"
"""The agreement hash every party sends: plan hash and every dealer's commitment (cf. CertEq)."""
RESHARE_TAG_ECDSA_SESSION = "shardkeep/reshare/ecdsa-session"
"""Session id of the DKLs23 pairwise setup run inside a reshare/refresh, from the agreement hash."""
EXPORT_TAG_CONTEXT = "shardkeep/export/context"
"""Binds a sealed export contribution to session, keyring, quorum, sender and recipient key."""
EXPORT_TAG_EPHEMERAL = "shardkeep/export/ephemeral"
"""Hedged derivation of the sealing ephemeral X25519 key from the caller's randomness."""
EXPORT_HKDF_INFO_LABEL = b"shardkeep/export/v1\x00"
"""In front of enc || recipient key || context in the HKDF ``info`` of ``tss.export.seal_to``."""
KEYCHANGE_CERTEQ_MSG_PREFIX = b"shardkeep/keychange certeq"
"""Zero-padded to 33 bytes in front of a key change's certificate signatures (CertEq shape)."""
EPOCH_ACK_MSG_PREFIX = b"shardkeep/epoch ack"
"""Zero-padded to 33 bytes in front of a party's acknowledgment that it uses a new epoch."""
PARTY_CLAIM_MSG_PREFIX = b"shardkeep/party claim"
"""Zero-padded to 33 bytes in front of a party's binding of a new device key to its seat."""
KEYGEN_TAG_SETUP_SESSION = "shardkeep/keygen/ecdsa-setup-session"
KEYGEN_TAG_ROUND1_CONTEXT = "shardkeep/keygen/round1-context"
"""Binds a keygen's signed round-1 messages to its session id and ChillDKG parameters."""
KEYGEN_TAG_ROUND1_HASH = "shardkeep/keygen/round1-message"
"""Hash of a ChillDKG round-1 message, the value a party signs and echoes."""
KEYGEN_SIGNED_ROUND1_PREFIX = b"shardkeep/keygen/signed round1"
"""BIP-340 message prefix of a party's host-key signature on its round-1 message."""
SIGN_TAG_ECDSA_SESSION = "shardkeep/sign/ecdsa-session"
PAIR_SETUP_TAG_SESSION = "shardkeep/pair-setup/session"

### Party channels (tss.channel: HPKE Auth mode between ceremony parties)
# The RFC 9180 labels ("HPKE-v1", "eae_prk", ...) are the spec's and stay in tss.channel.

CHANNEL_TAG_PARTY_ID = "shardkeep/channel/party-id"
"""Party id = hex of the first 20 bytes of this tagged hash of the static X25519 public key."""
CHANNEL_TAG_EPHEMERAL = "shardkeep/channel/ephemeral"
"""Hedged derivation of each message's HPKE ephemeral ikmE from the caller's randomness."""
CHANNEL_HPKE_INFO_LABEL = b"shardkeep/channel/v1\x00"
"""In front of the envelope header in the HPKE ``info`` (RFC 9180 §5.1, §8.1)."""

### Service lifecycle requests (shardkeep.lifecycle: a CeremonyRequest -> a tss plan)

LIFECYCLE_TAG_SESSION = "shardkeep/lifecycle/session"
"""Session id of a refresh, reshare or export plan: the request's kind, wallet, room, ceremony."""

### Bitcoin transactions (shardkeep.chains.bip341: BIP-341 signature hash)

BIP341_TAG_TAPSIGHASH = "TapSighash"
"""BIP-341 "Common signature message": the sighash is hash_TapSighash(0x00 || SigMsg)."""
