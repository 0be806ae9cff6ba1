"""The Kefu CDK app: a typed stage config, one construct per capability, stacks that compose them.

Nothing here imports the runtime code (`kefu`, `functions`): the app only points at the folders
that become Lambda assets.
"""
