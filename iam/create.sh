#!/usr/bin/env bash
# Create the two instance profiles cluster.yaml names, for the bucket given as $1 (once per
# AWS account; needs IAM rights on your machine). See README.md, "Running on a cluster".
#   clar-ray-head    the head: launches and stops workers (the autoscaler), passes the
#                    worker role to them, reads and writes the bucket
#   clar-ray-worker  GPU and CPU workers: read and write the bucket, nothing else
set -euo pipefail
bucket="${1:?usage: iam/create.sh YOUR-BUCKET}"
here="$(cd "$(dirname "$0")" && pwd)"
for name in head worker; do
  role="clar-ray-$name"
  aws iam create-role --role-name "$role" \
      --assume-role-policy-document "file://$here/ec2-trust.json" > /dev/null
  sed "s/YOUR-BUCKET/$bucket/g" "$here/$name-policy.json" > "/tmp/$role-policy.json"
  aws iam put-role-policy --role-name "$role" --policy-name "$role" \
      --policy-document "file:///tmp/$role-policy.json"
  aws iam create-instance-profile --instance-profile-name "$role" > /dev/null
  aws iam add-role-to-instance-profile --instance-profile-name "$role" --role-name "$role"
  echo "created role and instance profile $role"
done
