"""The enclave's policy engine: per-wallet policies over the parsed activity.

Design: docs/security/policy.md.

``conditions`` compiles and evaluates CEL conditions, ``facts`` turns an
activity and its parsed transaction into what conditions see, ``engine``
decides (deny wins; allow needs its consensus of approvals).
"""
