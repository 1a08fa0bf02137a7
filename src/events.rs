//! Revocations made elsewhere (feature `events`): Cognito's CloudTrail events, delivered by an
//! EventBridge rule to an SQS queue, make the fleet verify that user's tokens again.
//!
//! Cognito logs every user-pool call to CloudTrail, and EventBridge delivers each one as an "AWS
//! API Call via CloudTrail" event naming the user by `detail.additionalEventData.sub`. For the
//! calls that can end a user's access (disable, delete, sign-out, password changes, group
//! removal), the consumer drops that user's verdicts (fleet-wide in fleet mode), so that the next
//! request of each of their tokens goes to `GetUser`. An event never refuses a token by itself:
//! a spoofed or misrouted one costs one call per active token of that user, never a false 401.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use metrics::{counter, Counter};
use serde_json::Value;

/// The calls after which a user's tokens may no longer be good.
pub(crate) const HANDLED_EVENTS: [&str; 10] = [
    "AdminDisableUser",
    "AdminDeleteUser",
    "DeleteUser",
    "AdminUserGlobalSignOut",
    "GlobalSignOut",
    "RevokeToken",
    "AdminResetUserPassword",
    "AdminSetUserPassword",
    "ChangePassword",
    "AdminRemoveUserFromGroup",
];

/// How long one receive waits for messages (SQS's longest long poll).
const LONG_POLL_SECS: i32 = 20;
/// The longest pause after failures in a row.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How many event ids are remembered, to skip redeliveries.
const REMEMBERED: usize = 10_000;

/// What a message asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Verify this user's tokens again.
    Reverify { sub: String, event_id: Option<String> },
    /// Nothing to do, and why (a fixed, loggable word).
    Ignore(&'static str),
    /// Not an EventBridge event of the expected shape.
    Malformed,
}

/// Reads one message's body: an EventBridge event carrying a CloudTrail record.
pub(crate) fn decide(body: &str, pools: &[&str]) -> Decision {
    let Ok(event) = serde_json::from_str::<Value>(body) else { return Decision::Malformed };
    let Some(detail) = event.get("detail").filter(|d| d.is_object()) else { return Decision::Malformed };
    let Some(name) = detail.get("eventName").and_then(Value::as_str) else { return Decision::Malformed };
    if !HANDLED_EVENTS.contains(&name) {
        return Decision::Ignore("not a call that ends access");
    }
    if detail.get("errorCode").and_then(Value::as_str).is_some_and(|c| !c.is_empty()) {
        return Decision::Ignore("the call failed");
    }
    // A pool named by the record must be one of ours; the calls authorized by a token name none.
    let named = ["requestParameters", "additionalEventData"]
        .iter()
        .find_map(|part| detail.get(part)?.get("userPoolId")?.as_str());
    if named.is_some_and(|pool| !pools.contains(&pool)) {
        return Decision::Ignore("another user pool");
    }
    let sub = detail.get("additionalEventData").and_then(|d| d.get("sub")).and_then(Value::as_str);
    let Some(sub) = sub.filter(|s| !s.is_empty() && s.len() <= 128) else {
        return Decision::Ignore("no sub in the record");
    };
    let event_id = detail.get("eventID").or_else(|| event.get("id")).and_then(Value::as_str);
    Decision::Reverify { sub: sub.to_owned(), event_id: event_id.map(str::to_owned) }
}

/// The consumer's settings and state.
pub(crate) struct Events {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    started: AtomicBool,
    /// The event ids handled lately, oldest first.
    seen: Mutex<(HashSet<String>, VecDeque<String>)>,
    outcomes: Outcomes,
}

struct Outcomes {
    applied: Counter,
    ignored: Counter,
    duplicate: Counter,
    malformed: Counter,
    errors: Counter,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("queue_url", &self.queue_url).finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(client: aws_sdk_sqs::Client, queue_url: String) -> Self {
        let outcome = |o: &'static str| counter!("actix_cognito_events_total", "outcome" => o);
        Events {
            client,
            queue_url,
            started: AtomicBool::new(false),
            seen: Mutex::default(),
            outcomes: Outcomes {
                applied: outcome("applied"),
                ignored: outcome("ignored"),
                duplicate: outcome("duplicate"),
                malformed: outcome("malformed"),
                errors: counter!("actix_cognito_events_receive_errors_total"),
            },
        }
    }

    /// Whether the consumer is to be started now (once, within a runtime).
    pub(crate) fn start(&self) -> bool {
        !self.started.load(Relaxed)
            && tokio::runtime::Handle::try_current().is_ok()
            && !self.started.swap(true, Relaxed)
    }

    /// Waits for messages (long poll); their receipt handles and bodies.
    pub(crate) async fn receive(&self) -> Result<Vec<(String, String)>, String> {
        let call = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(LONG_POLL_SECS)
            .send();
        let limit = Duration::from_secs(LONG_POLL_SECS as u64 + 10);
        let out = match tokio::time::timeout(limit, call).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => return Err(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
            Err(_) => return Err(format!("no answer within {limit:?}")),
        };
        let messages = out.messages.unwrap_or_default().into_iter();
        Ok(messages.filter_map(|m| Some((m.receipt_handle?, m.body.unwrap_or_default()))).collect())
    }

    /// Deletes handled messages; those it could not are received again and skipped as duplicates.
    pub(crate) async fn delete(&self, handles: Vec<String>) {
        if handles.is_empty() {
            return;
        }
        let entries = handles.into_iter().enumerate().filter_map(|(i, handle)| {
            DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(handle).build().ok()
        });
        let call = self
            .client
            .delete_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries.collect()))
            .send();
        match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok(out)) if out.failed.is_empty() => {}
            Ok(Ok(out)) => {
                tracing::warn!(failed = out.failed.len(), "some event messages could not be deleted")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(e), "deleting event messages")
            }
            Err(_) => tracing::warn!("deleting event messages: no answer within 10 s"),
        }
    }

    /// The user whose tokens a message asks to verify again, and the event's id, unless this
    /// instance handled that event already. The caller counts it ([`Events::count`]).
    pub(crate) fn handle(&self, body: &str, pools: &[&str]) -> Option<(String, Option<String>)> {
        match decide(body, pools) {
            Decision::Reverify { sub, event_id } => {
                if let Some(id) = &event_id {
                    let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                    let (set, order) = &mut *seen;
                    if !set.insert(id.clone()) {
                        self.outcomes.duplicate.increment(1);
                        return None;
                    }
                    order.push_back(id.clone());
                    if order.len() > REMEMBERED {
                        order.pop_front().map(|old| set.remove(&old));
                    }
                }
                Some((sub, event_id))
            }
            Decision::Ignore(why) => {
                self.outcomes.ignored.increment(1);
                tracing::debug!(reason = why, "event ignored");
                None
            }
            Decision::Malformed => {
                self.outcomes.malformed.increment(1);
                tracing::warn!(
                    bytes = body.len(),
                    "an event message is not an EventBridge CloudTrail event; deleted"
                );
                None
            }
        }
    }

    /// Counts an event this instance let through: applied, or found handled by another instance.
    pub(crate) fn count(&self, applied: bool) {
        let outcome = if applied { &self.outcomes.applied } else { &self.outcomes.duplicate };
        outcome.increment(1);
    }

    /// The pause after `failures` failed receives in a row: 1 s, doubling, at most 30 s.
    pub(crate) fn backoff(&self, failures: u32, error: &str) -> Duration {
        self.outcomes.errors.increment(1);
        let pause = Duration::from_secs(1u64 << failures.min(5).saturating_sub(1)).min(MAX_BACKOFF);
        tracing::warn!(error, retry_in_secs = pause.as_secs(), queue = %self.queue_url, "receiving Cognito events");
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(detail: Value) -> String {
        json!({
            "id": "eb-1", "source": "aws.cognito-idp", "detail-type": "AWS API Call via CloudTrail",
            "detail": detail,
        })
        .to_string()
    }

    #[test]
    fn the_calls_that_end_access_name_their_user_by_sub() {
        let body = event(json!({
            "eventName": "AdminDisableUser", "eventID": "ct-1",
            "requestParameters": {"userPoolId": "eu-west-1_A", "username": "HIDDEN_DUE_TO_SECURITY_REASONS"},
            "additionalEventData": {"sub": "1234-abcd"},
        }));
        let expected = Decision::Reverify { sub: "1234-abcd".into(), event_id: Some("ct-1".into()) };
        assert_eq!(decide(&body, &["eu-west-1_A"]), expected);
        // Another pool's, a failed call, another call, a record without a sub: nothing to do.
        assert_eq!(decide(&body, &["eu-west-1_B"]), Decision::Ignore("another user pool"));
        let failed = event(json!({"eventName": "AdminDeleteUser", "errorCode": "UserNotFoundException",
            "additionalEventData": {"sub": "x"}}));
        assert_eq!(decide(&failed, &[]), Decision::Ignore("the call failed"));
        let other = event(json!({"eventName": "AdminGetUser", "additionalEventData": {"sub": "x"}}));
        assert_eq!(decide(&other, &[]), Decision::Ignore("not a call that ends access"));
        let no_sub = event(json!({"eventName": "GlobalSignOut"}));
        assert_eq!(decide(&no_sub, &[]), Decision::Ignore("no sub in the record"));
        // A call authorized by a token names no pool: the event id falls back to EventBridge's.
        let token_call = event(json!({"eventName": "GlobalSignOut", "additionalEventData": {"sub": "s"}}));
        assert_eq!(
            decide(&token_call, &["eu-west-1_A"]),
            Decision::Reverify { sub: "s".into(), event_id: Some("eb-1".into()) }
        );
    }

    #[test]
    fn anything_else_is_malformed() {
        for body in ["", "not json", "[]", r#"{"detail": "x"}"#, r#"{"detail": {}}"#] {
            assert_eq!(decide(body, &[]), Decision::Malformed, "{body}");
        }
    }
}
