"""The audit log store: append-only records of requests and a narrow index of what compliance queries ask.

https://profiles.ihe.net/ITI/BALP/
"""
