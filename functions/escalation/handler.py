"""The escalation Lambda (being written): `lambda_handler` for SQS batches, `sweep` for the schedule."""
