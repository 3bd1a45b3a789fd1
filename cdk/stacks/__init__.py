"""The Car Rental CDK stacks: one module per stack (`<x>_stack.py`), shared helpers in `common/`.

deploykit maps a change to `cdk/stacks/<x>_stack.py` to that one stack and a change under `common/` (or to
`cdk/app.py`) to every stack, so code used by one stack only belongs in that stack's module.
"""
