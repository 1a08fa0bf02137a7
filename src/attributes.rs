//! Attributes that authorization reads must not be the user's to write.
//!
//! A user can change their own attributes with their access token (`UpdateUserAttributes`)
//! unless the app client's write permissions (`WriteAttributes`) leave them out, custom ones
//! included: a `custom:tenant` that decides which tenant's data a request reaches is then the
//! user's to choose. [`VerifierBuilder::authorization_attributes`](crate::VerifierBuilder::authorization_attributes)
//! names the attributes the app authorizes with; [`Verifier::hydrate`](crate::Verifier::hydrate)
//! reads each app client with `DescribeUserPoolClient` (a signed call, with the `SdkConfig`'s
//! credentials) and refuses to start while one of them can write such an attribute.

use aws_sdk_cognitoidentityprovider::Client;

use crate::error::ConfigError;

/// What to check, and the signed clients to check it with (none without credentials).
pub(crate) struct AttributeCheck {
    pub(crate) attributes: Vec<String>,
    pub(crate) client_ids: Vec<String>,
    /// Each pool, with a client signed with the app's credentials, in the pool's region.
    pub(crate) pools: Vec<(String, Client)>,
}

impl AttributeCheck {
    /// Checks every app client, in whichever pool has it; logs a warning when there are no
    /// credentials to check with.
    pub(crate) async fn run(&self) -> Result<(), ConfigError> {
        if self.attributes.is_empty() {
            return Ok(());
        }
        if self.pools.is_empty() {
            tracing::warn!(
                attributes = ?self.attributes,
                "authorization_attributes cannot be checked without AWS credentials (sdk_config with a \
                 credentials provider, allowed cognito-idp:DescribeUserPoolClient): make sure no app client \
                 can write them"
            );
            return Ok(());
        }
        for client_id in &self.client_ids {
            let mut found = false;
            for (pool, admin) in &self.pools {
                let described =
                    admin.describe_user_pool_client().user_pool_id(pool).client_id(client_id).send().await;
                let described = match described {
                    Ok(d) => d,
                    Err(e) if e.as_service_error().is_some_and(|e| e.is_resource_not_found_exception()) => {
                        continue
                    }
                    Err(e) => {
                        return Err(ConfigError::AttributeCheck {
                            client_id: client_id.clone(),
                            reason: aws_sdk_cognitoidentityprovider::error::DisplayErrorContext(e)
                                .to_string(),
                        })
                    }
                };
                found = true;
                let writable = described.user_pool_client.and_then(|c| c.write_attributes);
                for attribute in &self.attributes {
                    // No list: the client keeps Cognito's default, under which users write attributes.
                    if writable.as_ref().is_none_or(|w| w.iter().any(|a| a == attribute)) {
                        return Err(ConfigError::WritableAttribute {
                            attribute: attribute.clone(),
                            client_id: client_id.clone(),
                            explicit: writable.is_some(),
                        });
                    }
                }
            }
            if !found {
                return Err(ConfigError::AttributeCheck {
                    client_id: client_id.clone(),
                    reason: "no pool of the verifier has this app client".into(),
                });
            }
        }
        Ok(())
    }
}
