"""One-shot bucket set-up for the S3 stand-in, in place of minio-init's `mc mb --ignore-existing`:
create MLFLOW_BUCKET with MinIO's root credentials through the S3 API (idempotent), retrying while
the store is still starting."""

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

ENDPOINT = os.environ.get("S3_ENDPOINT_URL", "http://minio:9000")
BUCKET = os.environ.get("MLFLOW_BUCKET", "mlflow")


def main(timeout: float = 120.0) -> int:
    s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                      aws_access_key_id=os.environ["MINIO_ROOT_USER"],
                      aws_secret_access_key=os.environ["MINIO_ROOT_PASSWORD"])
    deadline = time.monotonic() + timeout
    while True:
        try:
            if BUCKET not in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}:
                s3.create_bucket(Bucket=BUCKET)
            s3.head_bucket(Bucket=BUCKET)
            print(f"bucket {BUCKET} ready")
            return 0
        except (BotoCoreError, ClientError) as error:
            if time.monotonic() > deadline:
                print(f"bucket {BUCKET} not created at {ENDPOINT}: {error}", file=sys.stderr)
                return 1
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
