"""One router per resource: jobs, searches, registry (models), health."""
