#!/usr/bin/env bash
# LocalStack init hook: the demo pool, app client and users, as examples/seed.rs makes them.
# Prints the ids and tokens as COGNITO_* lines in the container log.
set -euo pipefail
password='Demo-Passw0rd!'

pool=$(awslocal cognito-idp create-user-pool --pool-name actix-cognito-demo \
    --schema Name=tenant,AttributeDataType=String,Mutable=true \
    --query UserPool.Id --output text)
client=$(awslocal cognito-idp create-user-pool-client --user-pool-id "$pool" \
    --client-name actix-cognito-demo-app \
    --explicit-auth-flows ALLOW_ADMIN_USER_PASSWORD_AUTH ALLOW_REFRESH_TOKEN_AUTH \
    --query UserPoolClient.ClientId --output text)

create_user() {
    awslocal cognito-idp admin-create-user --user-pool-id "$pool" --username "$1" \
        --message-action SUPPRESS --user-attributes "${@:2}" >/dev/null
    awslocal cognito-idp admin-set-user-password --user-pool-id "$pool" --username "$1" \
        --password "$password" --permanent
}
create_user alice Name=email,Value=alice@example.com Name=email_verified,Value=true \
    Name=given_name,Value=Alice Name=custom:tenant,Value=acme
create_user root Name=email,Value=root@example.com
awslocal cognito-idp create-group --user-pool-id "$pool" --group-name admin >/dev/null
awslocal cognito-idp admin-add-user-to-group --user-pool-id "$pool" --username root --group-name admin

token() {
    awslocal cognito-idp admin-initiate-auth --user-pool-id "$pool" --client-id "$client" \
        --auth-flow ADMIN_USER_PASSWORD_AUTH --auth-parameters "USERNAME=$1,PASSWORD=$password" \
        --query AuthenticationResult.AccessToken --output text
}
echo "COGNITO_USER_POOL_ID=$pool"
echo "COGNITO_CLIENT_ID=$client"
echo "COGNITO_DEMO_ALICE_TOKEN=$(token alice)"
