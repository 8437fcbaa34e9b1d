"""Computes the EKS token test vector with botocore, independently of the Rust code.

Signs like `aws eks get-token`: a SigV4 query-string presign (60 s) of STS
GetCallerIdentity with the `x-k8s-aws-id` header signed, then
`k8s-aws-v1.` + base64url(url) without padding. Fixed credentials and time.
Run: python3 stack/tests/data/eks_token_vector.py
"""
import base64
import datetime
from unittest import mock

import botocore.auth
import botocore.awsrequest
import botocore.credentials

creds = botocore.credentials.Credentials(
    "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session/token+example="
)
req = botocore.awsrequest.AWSRequest(
    method="GET",
    url="https://sts.us-west-2.amazonaws.com/",
    params={"Action": "GetCallerIdentity", "Version": "2011-06-15"},
    headers={"x-k8s-aws-id": "demo-cluster"},
)
now = datetime.datetime(2026, 11, 29, 1, 2, 3)
with mock.patch("botocore.auth.get_current_datetime", return_value=now):
    botocore.auth.SigV4QueryAuth(creds, "sts", "us-west-2", expires=60).add_auth(req)
url = req.prepare().url
print(url)
print("k8s-aws-v1." + base64.urlsafe_b64encode(url.encode()).decode().rstrip("="))
