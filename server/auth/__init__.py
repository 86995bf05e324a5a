"""The built-in SMART on FHIR authorization server and the resource server's token checks."""
