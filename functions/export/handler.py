"""The export Lambda (being written): `lambda_handler` for the monthly schedule."""
