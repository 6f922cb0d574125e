"""Prepares a moto server for the ECR plugin's tests, then turns on IAM enforcement.

Usage: moto_setup.py ENDPOINT

Creates a repository, a user allowed to pull from it and one allowed nothing,
and a role that web-identity tokens may assume. Prints their keys as JSON.
Every call here runs before enforcement starts, so no credentials are needed.
"""

import json
import sys
import urllib.request

import boto3

ENDPOINT = sys.argv[1]
REGION = "us-east-1"
ACCOUNT = "123456789012"

PULL_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "ecr:GetAuthorizationToken",
                "ecr:BatchCheckLayerAvailability",
                "ecr:GetDownloadUrlForLayer",
                "ecr:GetRepositoryPolicy",
                "ecr:DescribeRepositories",
                "ecr:ListImages",
                "ecr:BatchGetImage",
                "sts:GetCallerIdentity",
            ],
            "Resource": "*",
        }
    ],
}

TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Federated": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.example"},
            "Action": "sts:AssumeRoleWithWebIdentity",
        }
    ],
}


def client(service):
    return boto3.client(
        service,
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )


def main():
    iam = client("iam")
    client("ecr").create_repository(repositoryName="team/app")
    keys = {}
    for user, policy in (("puller", PULL_POLICY), ("nobody", None)):
        iam.create_user(UserName=user)
        if policy:
            iam.put_user_policy(UserName=user, PolicyName="pull", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = {"id": key["AccessKeyId"], "secret": key["SecretAccessKey"]}
    role = iam.create_role(RoleName="tenant-a-puller", AssumeRolePolicyDocument=json.dumps(TRUST_POLICY))
    iam.put_role_policy(RoleName="tenant-a-puller", PolicyName="pull", PolicyDocument=json.dumps(PULL_POLICY))
    keys["role"] = role["Role"]["Arn"]
    # From here on moto checks every request against IAM.
    request = urllib.request.Request(
        f"{ENDPOINT}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}
    )
    urllib.request.urlopen(request).read()
    print(json.dumps(keys))


if __name__ == "__main__":
    main()
