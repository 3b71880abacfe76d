"""The enclave's policy engine: per-wallet policies over the parsed activity.

Design: docs/security/policy.md.

``facts`` turns an activity and its parsed transaction into what conditions
(``shardkeep.policy_conditions``) see, ``engine`` decides (deny wins; allow
needs its consensus of approvals), ``authenticators`` and ``webauthn``
verify approvals, and ``gate`` puts them together for the service.
"""
