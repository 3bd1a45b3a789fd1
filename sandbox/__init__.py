"""The sandbox: a local AWS on this machine where deploykit's whole deploy really runs.

It hosts moto in server mode in its own process and extends it so that the flows the Car Rental app
uses behave as on AWS: ECS services run their tasks as containers on the local Docker engine and roll
like ECS, ALB listeners serve HTTP on 127.0.0.1, ECR is backed by a real OCI registry, API Gateway
stages run the uploaded Lambda code. deploykit talks to it exactly as to AWS; it never imports this
package.
"""
