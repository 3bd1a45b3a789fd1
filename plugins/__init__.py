"""deploykit's built-in check plugins, registered exactly like a team's own: through the entry-point group
``deploykit`` (one module = one plugin = one check).

- ``alb``: the service's target group has a healthy target and ``GET /health`` through the ALB answers ok.
- ``api_gateway``: the API stage's health route answers 200 and the login Lambda refuses a malformed body (400).
- ``auth`` (needs ``api_gateway``): a throwaway Cognito user logs in through the API; the backend accepts its
  token on ``GET /me`` and refuses the same token with an altered signature (401).
- ``kyc`` (needs ``alb``): the KYC workflow end to end with a throwaway user: start, upload by presigned URL,
  submit, status.
- ``connectivity``: the backend's deep health (S3, DynamoDB, Cognito) is ok, and the service uses the bucket,
  tables and user pool the stacks output.

And one observer, no check: ``notify`` announces deployments in a chat through its incoming webhook, once
``[plugins.notify]`` in deploy.toml names the variable holding the webhook's URL.

Each check cleans up what it creates (users, KYC documents and cases), even when it fails. The modules use
only deploykit's public check API (:mod:`deploykit.checks`, :mod:`deploykit.hookspecs`).
"""

from __future__ import annotations

BUILTIN = ("alb", "api_gateway", "auth", "kyc", "connectivity")
