"""The environment the chat function runs in, as the CDK app deploys it, for the measurements
and checks that start it outside Lambda (the cold start benchmark, the layer's pruning).

Lambda's own variables matter: the X-Ray SDK, seeing LAMBDA_TASK_ROOT, samples locally instead
of building two botocore clients for a sampling daemon at import, as it does anywhere else.
The credentials are fake: building the service creates the AWS clients and calls none of them.
"""

from __future__ import annotations

import tempfile

LAMBDA = {
    "LAMBDA_TASK_ROOT": tempfile.gettempdir(),
    "AWS_LAMBDA_FUNCTION_NAME": "kefu-chat",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
    "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE00",
    "AWS_SECRET_ACCESS_KEY": "example-secret-key-for-building-clients-only",
    "AWS_SESSION_TOKEN": "example-session-token",
    "AWS_EC2_METADATA_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "kefu-chat",
    "POWERTOOLS_METRICS_NAMESPACE": "Kefu",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}

# What infra_cdk gives the chat function of the dev stage, with calibrated thresholds, its
# references resolved to example values (tests/infra/test_cdk_chat_function.py keeps the names
# in step with the synthesized template).
DEPLOYED_CHAT = {
    **LAMBDA,
    "POWERTOOLS_LOGGER_LOG_EVENT": "false",
    "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
    "KEFU_AGENT_AUTH": "iam",
    "KEFU_ANSWER_CACHE": "redis",
    "KEFU_BEDROCK_EMBEDDING_MODEL_ID": "amazon.titan-embed-text-v2:0",
    "KEFU_BEDROCK_MODEL_ID": "anthropic.claude-3-5-haiku-20241022-v1:0",
    "KEFU_CORS_ALLOW_ORIGINS": '["*"]',
    "KEFU_EMBEDDER": "bedrock",
    "KEFU_ESCALATION_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/kefu-escalation",
    "KEFU_HANDOVER_AFTER_FAILURES": "2",
    "KEFU_INDEX": "opensearch",
    "KEFU_INSIGHTS": "dynamodb",
    "KEFU_INSIGHTS_TABLE": "kefu-insights",
    "KEFU_MEMORY_TOKENS": "2048",
    "KEFU_MODEL": "bedrock",
    "KEFU_OPENSEARCH_INDEX": "kefu-kb",
    "KEFU_OPENSEARCH_URL": "https://vpc-kefu-kb-dev.us-east-1.es.amazonaws.com",
    "KEFU_QUEUE": "sqs",
    "KEFU_REDIS_SECRET": "arn:aws:secretsmanager:us-east-1:123456789012:secret:kefu-cache",
    "KEFU_REDIS_URL": "rediss://kefu-dev-answers.serverless.use1.cache.amazonaws.com:6379",
    "KEFU_SESSIONS": "dynamodb",
    "KEFU_SESSIONS_TABLE": "kefu-sessions",
    "KEFU_TICKETS": "dynamodb",
    "KEFU_TICKETS_TABLE": "kefu-tickets",
    "KEFU_FAQ_THRESHOLD": "0.8",
    "KEFU_HEAD_THRESHOLD": "0.3",
    "KEFU_PASSAGE_THRESHOLD": "0.8",
    "KEFU_SIMILARITY_THRESHOLD": "0.85",
}
# Set by `faq_threshold` and its kin in cdk.json when a stage is calibrated (dev is not yet).
CALIBRATION = (
    "KEFU_FAQ_THRESHOLD",
    "KEFU_HEAD_THRESHOLD",
    "KEFU_PASSAGE_THRESHOLD",
    "KEFU_SIMILARITY_THRESHOLD",
)
