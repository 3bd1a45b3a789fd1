"""CarRentalAuthStack: who may log in: the Cognito user pool and the app client the login uses."""

from __future__ import annotations

from typing import Any

from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from stacks.common.nag import suppress
from stacks.common.outputs import output
from stacks.common.settings import Settings

MIN_PASSWORD_LENGTH = 12


class CarRentalAuthStack(Stack):
    """A user pool with email sign-in and a strong password policy, and a public app client."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)

        self.user_pool = cognito.UserPool(
            self,
            "UserPool",
            user_pool_name=f"car-rental-{settings.environment}-users",
            # Users sign in with their email address as the username.
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            # Accounts are created by the operators (AdminCreateUser), not by anyone on the internet.
            self_sign_up_enabled=False,
            password_policy=cognito.PasswordPolicy(
                min_length=MIN_PASSWORD_LENGTH,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            # The users are data: replacing or deleting the pool would lock every user out.
            removal_policy=RemovalPolicy.RETAIN,
        )
        suppress(
            self.user_pool,
            "AwsSolutions-COG2",
            "MFA is off for now: the login Lambda runs a plain USER_PASSWORD_AUTH flow and has no step for an MFA "
            "challenge yet. Accounts are admin-created and the password policy is strict; turn MFA on together "
            "with a challenge step in login_handler.",
        )
        suppress(
            self.user_pool,
            "AwsSolutions-COG8",
            "Threat protection (compromised-credential and risky sign-in detection) needs the Cognito Plus feature "
            "plan, billed per monthly active user; with self sign-up off, only admin-created accounts can log in.",
        )

        self.client = self.user_pool.add_client(
            "AppClient",
            user_pool_client_name="car-rental-app",
            # USER_PASSWORD_AUTH (ALLOW_USER_PASSWORD_AUTH) for the login Lambda; CDK adds
            # ALLOW_REFRESH_TOKEN_AUTH so clients can refresh without the password.
            auth_flows=cognito.AuthFlow(user_password=True),
            # A public client: the login Lambda and the smoke checks hold no client secret to leak.
            generate_secret=False,
            # "Incorrect username or password" whether or not the user exists: no user enumeration.
            prevent_user_existence_errors=True,
            access_token_validity=Duration.hours(1),
            id_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
            enable_token_revocation=True,
            # no OAuth flows: the CDK's defaults (implicit and code grants, an example.com callback) would go live
            # the day someone gave the pool a domain
            disable_o_auth=True,
        )

        # The issuer of the pool's JWTs; its keys are at <issuer>/.well-known/jwks.json.
        self.issuer = Fn.join(
            "", ["https://cognito-idp.", self.region, ".", self.url_suffix, "/", self.user_pool.user_pool_id]
        )

        output(self, "UserPoolId", self.user_pool.user_pool_id, "Cognito user pool id")
        output(self, "UserPoolArn", self.user_pool.user_pool_arn, "Cognito user pool ARN")
        output(self, "UserPoolClientId", self.client.user_pool_client_id, "App client id (USER_PASSWORD_AUTH)")
        output(self, "UserPoolIssuer", self.issuer, "Issuer (iss) of the pool's tokens")
        output(self, "UserPoolJwksUrl", Fn.join("", [self.issuer, "/.well-known/jwks.json"]), "JWKS of the pool")
