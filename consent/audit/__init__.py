"""The audit trail: AuditEvents in IHE BALP shapes, their hash chain, signed checkpoints and verification.

https://profiles.ihe.net/ITI/BALP/
"""
