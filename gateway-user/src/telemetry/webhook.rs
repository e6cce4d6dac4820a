//! `POST /hooks/git` on the admin server: a push notification from the Git host wakes the agent
//! for an immediate fetch and reconcile pass, instead of waiting for the next `--interval`.
//!
//! A request must prove it knows the shared secret, GitHub style (`X-Hub-Signature-256:
//! sha256=<hex HMAC-SHA256 of the raw body>`) or GitLab style (`X-Gitlab-Token: <secret>`); both
//! are compared in constant time. The body is not interpreted: whatever the event, the agent
//! fetches its configured ref, and calls are coalesced ([`super::wake`]): one pass at once for a
//! call after a quiet spell, then at most one more per [`super::wake::MIN_GAP`], however many
//! calls arrive (a replayed delivery costs no more than that).
//!
//! <https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>,
//! <https://docs.gitlab.com/user/project/integrations/webhooks/#validate-requests-with-a-secret-token>
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::{debug, info, warn};

use super::Shared;
pub use tollgate_source::webhook::{SecretError, WebhookSecret, SIGNATURE_HEADER, TOKEN_HEADER};

/// The webhook's path on the admin server.
pub const PATH: &str = "/hooks/git";

/// Largest body accepted (GitHub caps payloads at 25 MB, but the agent reads none of it: a push
/// event is a few kB, and a megabyte is plenty for any event worth signing).
pub const MAX_BODY: usize = 1024 * 1024;
/// Time a client has to send the whole body (a Git host sends its few kB at once).
pub const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What became of a webhook call: the `outcome` label of `tollgate_webhook_calls_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Authenticated; a pass is scheduled (202).
    Accepted,
    /// Missing or wrong signature or token (401); nothing is fetched.
    Unauthorized,
    /// Body over [`MAX_BODY`] (413).
    TooLarge,
    /// No secret configured: the webhook is off (404).
    Disabled,
    /// The body could not be read (400).
    BadRequest,
}

impl Outcome {
    /// Every outcome (the label's bounded set).
    pub const ALL: [Outcome; 5] = [
        Outcome::Accepted,
        Outcome::Unauthorized,
        Outcome::TooLarge,
        Outcome::Disabled,
        Outcome::BadRequest,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Unauthorized => "unauthorized",
            Outcome::TooLarge => "too_large",
            Outcome::Disabled => "disabled",
            Outcome::BadRequest => "bad_request",
        }
    }
}

fn reply(status: StatusCode, outcome: Outcome, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "outcome": outcome.as_str(), "message": message })),
    )
        .into_response()
}

/// The handler of `POST /hooks/git`.
pub async fn receive(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (status, outcome, message) = judge(&shared, &headers, body).await;
    shared.metrics.webhook_call(outcome.as_str());
    reply(status, outcome, message)
}

async fn judge(
    shared: &Shared,
    headers: &HeaderMap,
    body: Body,
) -> (StatusCode, Outcome, &'static str) {
    let Some(secret) = shared.webhook_secret.as_ref() else {
        return (
            StatusCode::NOT_FOUND,
            Outcome::Disabled,
            "the webhook is disabled: start the agent with --webhook-secret-file or --webhook-secret-env",
        );
    };
    let too_large = (
        StatusCode::PAYLOAD_TOO_LARGE,
        Outcome::TooLarge,
        "the body is larger than the 1 MiB the webhook accepts",
    );
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        // Refused before a byte of the body is read.
        return too_large;
    }
    // A body that trickles in would hold an admin connection for its whole life (60 s); a
    // Git host sends its few kB at once.
    let read = tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(body, MAX_BODY).collect());
    let Ok(read) = read.await else {
        return (
            StatusCode::REQUEST_TIMEOUT,
            Outcome::BadRequest,
            "the body did not arrive within 10 s",
        );
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return too_large,
        Err(_) => {
            return (
                StatusCode::BAD_REQUEST,
                Outcome::BadRequest,
                "the body could not be read",
            )
        }
    };
    if let Err(why) = secret.authenticate(headers, &body) {
        warn!(
            reason = why,
            "webhook call refused (401); nothing is fetched"
        );
        return (StatusCode::UNAUTHORIZED, Outcome::Unauthorized, why);
    }
    let fresh = shared.wake.request();
    let event = headers
        .get("x-github-event")
        .or_else(|| headers.get("x-gitlab-event"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let event = event.chars().take(64).collect::<String>();
    if fresh {
        info!(event = %event, "webhook: a fetch and reconcile pass is scheduled");
        (
            StatusCode::ACCEPTED,
            Outcome::Accepted,
            "a fetch and reconcile pass is scheduled",
        )
    } else {
        // One line per pass, not per call: a burst of calls does not flood the log either.
        debug!(event = %event, "webhook: joins the pass already scheduled");
        (
            StatusCode::ACCEPTED,
            Outcome::Accepted,
            "a fetch and reconcile pass is already scheduled; this call joins it",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use tower::ServiceExt as _;

    // The example of GitHub's documentation ("Validating webhook deliveries"), computed by
    // GitHub, not by this code.
    const GITHUB_SECRET: &str = "It's a Secret to Everybody";
    const GITHUB_BODY: &str = "Hello, World!";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn shared(secret: Option<&str>) -> Arc<Shared> {
        Shared::with_webhook(
            "/nonexistent/tollgate-pins".into(),
            secret.map(|s| WebhookSecret::from_bytes(s.as_bytes().to_vec()).unwrap()),
        )
    }

    async fn call(
        shared: &Arc<Shared>,
        method: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> (StatusCode, String) {
        let mut request = Request::builder().method(method).uri(PATH);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = super::super::admin::router(shared.clone())
            .oneshot(request.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn count(shared: &Shared, outcome: &str) -> u64 {
        let text = shared.metrics.render(false);
        let prefix = format!("tollgate_webhook_calls_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no {prefix} in:\n{text}"))
            .parse()
            .unwrap()
    }

    /// True when a pass is due (taken by this call).
    async fn woken(shared: &Shared) -> bool {
        tokio::time::timeout(std::time::Duration::from_millis(50), shared.wake.due())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_github_signature_wakes_the_agent_once_and_a_wrong_one_does_not() {
        let s = shared(Some(GITHUB_SECRET));
        let (status, body) = call(
            &s,
            "POST",
            &[(SIGNATURE_HEADER, GITHUB_SIGNATURE)],
            Body::from(GITHUB_BODY),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert!(body.contains("\"outcome\":\"accepted\""), "{body}");
        // Two more calls before the agent wakes: still one pass pending, not three.
        for _ in 0..2 {
            call(
                &s,
                "POST",
                &[(SIGNATURE_HEADER, GITHUB_SIGNATURE)],
                Body::from(GITHUB_BODY),
            )
            .await;
        }
        assert!(woken(&s).await);
        assert!(!woken(&s).await, "calls are coalesced");
        assert_eq!(count(&s, "accepted"), 3);

        // The same signature over another body, a bad header, no header at all.
        for headers in [
            &[(SIGNATURE_HEADER, GITHUB_SIGNATURE)][..],
            &[(SIGNATURE_HEADER, "sha256=zz")][..],
            &[(SIGNATURE_HEADER, "sha1=757107ea")][..],
            &[][..],
        ] {
            let (status, body) = call(&s, "POST", headers, Body::from("Hello, World?")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{headers:?}: {body}");
        }
        assert!(!woken(&s).await, "a refused call wakes nothing");
        assert_eq!(count(&s, "unauthorized"), 4);
        assert_eq!(count(&s, "accepted"), 3);
    }

    #[tokio::test]
    async fn a_gitlab_token_is_compared_with_the_secret() {
        let s = shared(Some("s3cret"));
        let (status, _) = call(&s, "POST", &[(TOKEN_HEADER, "s3cret")], Body::empty()).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(woken(&s).await);
        for wrong in ["s3cre", "s3cret ", "S3CRET", ""] {
            let (status, _) = call(&s, "POST", &[(TOKEN_HEADER, wrong)], Body::empty()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?}");
        }
        assert!(!woken(&s).await);
        // A wrong signature is not rescued by a right token.
        let (status, _) = call(
            &s,
            "POST",
            &[
                (SIGNATURE_HEADER, GITHUB_SIGNATURE),
                (TOKEN_HEADER, "s3cret"),
            ],
            Body::from(GITHUB_BODY),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn oversized_bodies_other_methods_and_a_missing_secret_are_refused() {
        let s = shared(Some(GITHUB_SECRET));
        let big = vec![b'x'; MAX_BODY + 1];
        // Declared too large, and too large without a declared length (streamed).
        let declared = (MAX_BODY + 1).to_string();
        let (status, _) = call(
            &s,
            "POST",
            &[("content-length", declared.as_str())],
            Body::from(big.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let stream = futures_stream(big);
        let (status, _) = call(&s, "POST", &[], stream).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(count(&s, "too_large"), 2);
        let (status, _) = call(&s, "GET", &[], Body::empty()).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(!woken(&s).await);

        let off = shared(None);
        let (status, body) = call(
            &off,
            "POST",
            &[(SIGNATURE_HEADER, GITHUB_SIGNATURE)],
            Body::from(GITHUB_BODY),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("--webhook-secret-file"), "{body}");
        assert_eq!(count(&off, "disabled"), 1);
        assert!(!woken(&off).await);
    }

    /// A body of unknown length, in 64 KiB chunks.
    fn futures_stream(bytes: Vec<u8>) -> Body {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            bytes.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    }
}
