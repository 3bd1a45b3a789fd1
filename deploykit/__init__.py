"""deploykit: targeted, fast and safe deploys of the Car Rental platform.

The engine speaks the AWS APIs (boto3) and the Docker Engine API (docker SDK) and nothing else.
``tasks.py`` holds thin invoke tasks that parse options and call into this package.
"""

__version__ = "0.1.0"
