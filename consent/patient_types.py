"""What a `patient/` scope reaches besides the patient's compartment: shared content, read-only.

The compartment (R4B's, extended by CareLoop: resources/data/CompartmentDefinition-careloop-patient.json) holds
what is about a patient; a patient-scoped token reaches it for its own patient only. Subscriptions are reached by
the client that created them (consent/ownership.py). Of every other type, a patient-scoped token may read and
search only the definitional and directory content below (what apps need to render the patient's data); any
other type is refused, whatever the scope's type says. https://hl7.org/fhir/R4B/compartmentdefinition.html
"""

from __future__ import annotations

# definitions a patient app reads to make sense of its data (pathways, codes, questionnaires, operations)
DEFINITIONAL = frozenset({
    "ActivityDefinition", "CapabilityStatement", "CodeSystem", "CompartmentDefinition", "ConceptMap", "Library",
    "Measure", "NamingSystem", "ObservationDefinition", "OperationDefinition", "PlanDefinition", "Questionnaire",
    "SearchParameter", "SpecimenDefinition", "StructureDefinition", "StructureMap", "SubscriptionTopic",
    "TerminologyCapabilities", "ValueSet",
})
# the directory: who and where care comes from, and what medicines are (US Core patient apps read these)
DIRECTORY = frozenset({
    "Endpoint", "HealthcareService", "Location", "Medication", "MedicationKnowledge", "Organization",
    "Practitioner", "PractitionerRole", "Substance",
})
SHARED_READ_ONLY = DEFINITIONAL | DIRECTORY
# in the compartment, but written by the server alone: patient apps may read their own audit events only
SERVER_WRITTEN = frozenset({"AuditEvent"})
