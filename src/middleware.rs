//! The Actix middleware: bearer token in, a verified principal for the extractors out.

use std::borrow::Cow;
use std::fmt;
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{Error, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use tracing::Instrument as _;

use crate::error::{Rejection, Unavailable, VerifyError};
use crate::token::strip_bearer;
use crate::user::Principal;
use crate::verifier::Accept;
use crate::verifier::Verifier;

type ErrorHandler = Arc<dyn Fn(&AuthError, &HttpRequest) -> HttpResponse + Send + Sync>;
type Predicate = Arc<dyn Fn(&Principal) -> bool + Send + Sync>;

/// Where a route reads its token besides `Authorization: Bearer`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenSource {
    cookie: Option<String>,
    header: Option<HeaderName>,
}

/// Which groups or scopes a route demands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Any(Vec<String>),
    All(Vec<String>),
}

impl Requirement {
    fn met_by(&self, have: crate::user::Names<'_>) -> bool {
        let has = |want: &String| have.contains(want);
        match self {
            Requirement::Any(wants) => wants.iter().any(has),
            Requirement::All(wants) => wants.iter().all(has),
        }
    }

    fn names(&self) -> &[String] {
        match self {
            Requirement::Any(w) | Requirement::All(w) => w,
        }
    }
}

/// What a route demands of the sign-in itself (RFC 9470 step-up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct StepUp {
    /// `acr` must be one of these, when not empty.
    acr: Vec<String>,
    /// `auth_time` must be at most this many seconds ago.
    max_age: Option<u64>,
    /// The challenge's parameters: `, acr_values="...", max_age=N`.
    params: Arc<str>,
}

impl StepUp {
    fn render(&mut self) {
        let mut params = String::new();
        if !self.acr.is_empty() {
            params.push_str(&format!(", acr_values=\"{}\"", self.acr.join(" ")));
        }
        if let Some(max_age) = self.max_age {
            params.push_str(&format!(", max_age={max_age}"));
        }
        self.params = Arc::from(params);
    }

    /// Why `principal` falls short, if it does.
    fn unmet(&self, principal: &Principal, now: i64) -> Option<&'static str> {
        if !self.acr.is_empty() && !principal.acr().is_some_and(|acr| self.acr.iter().any(|a| a == acr)) {
            return Some("a higher authentication level is required");
        }
        let max_age = self.max_age?;
        match principal.auth_time_secs() {
            Some(at) if now.saturating_sub(at) <= max_age as i64 => None,
            _ => Some("a more recent authentication is required"),
        }
    }
}

#[derive(Clone)]
struct AuthConfig {
    realm: Arc<str>,
    resource_metadata: Option<String>,
    /// The parameters of every `WWW-Authenticate` challenge: the realm, and the resource
    /// metadata URL when set.
    params: Arc<str>,
    optional: bool,
    accept: Accept,
    source: Arc<TokenSource>,
    groups: Option<Requirement>,
    /// The pool whose groups `groups` names; none: a group of that name in any pool.
    groups_pool: Option<Arc<str>>,
    scopes: Option<Requirement>,
    predicates: Vec<Predicate>,
    step_up: Option<StepUp>,
    error_handler: Option<ErrorHandler>,
}

/// Middleware that lets a request through only with a Cognito access token that Cognito still
/// accepts, and hands the verified principal to the handlers: they take
/// [`CognitoUser`](crate::CognitoUser), `Option<CognitoUser>`, [`Principal`],
/// [`MachineClient`](crate::MachineClient) or [`BearerToken`](crate::BearerToken) as arguments.
///
/// Build the [`Verifier`] once, outside `HttpServer::new`, and give each worker a clone: all
/// `CognitoAuth`s made from one verifier share its cache.
///
/// ```no_run
/// use actix_cognito::{CognitoAuth, CognitoUser, Verifier};
/// use actix_web::{web, App, HttpServer, Responder};
///
/// async fn me(user: CognitoUser) -> impl Responder {
///     format!("hello {}", user.username())
/// }
///
/// # #[actix_web::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let verifier = Verifier::builder("eu-west-1_AbC123xyz").client_id("4p1l2vq8example").build()?;
/// HttpServer::new(move || {
///     App::new()
///         .service(web::scope("/api").wrap(CognitoAuth::new(verifier.clone())).route("/me", web::get().to(me)))
///         .service(
///             web::scope("/admin")
///                 .wrap(CognitoAuth::new(verifier.clone()).require_any_group(["admin"]))
///                 .route("", web::get().to(me)),
///         )
/// })
/// .bind(("127.0.0.1", 8080))?
/// .run()
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Answers (RFC 6750)
/// - no token: 401 with `WWW-Authenticate: Bearer realm="..."`;
/// - more than one `Authorization` header: 400, `error="invalid_request"`;
/// - a bad token: 401, `error="invalid_token"` and a short `error_description`;
/// - a missing group or scope: 403, `error="insufficient_scope"`;
/// - a sign-in below the route's level or too old ([`require_acr`](Self::require_acr),
///   [`require_max_age`](Self::require_max_age)): 401, `error="insufficient_user_authentication"`
///   (RFC 9470);
/// - Cognito unavailable or throttling: 503 with `Retry-After`.
///
/// The body is JSON, `{"error": ..., "message": ...}`, unless an
/// [`error_handler`](Self::error_handler) replaces it; the headers stay.
///
/// # Panics
/// Each builder method checks its input where it is called, and panics there with the setting
/// and its fix (`CognitoAuth is misconfigured: realm "a\"b" must be ...`): a misconfiguration is
/// a mistake in the app's code, shown the moment the app is built, with or without a log
/// subscriber, never as actix's bare "Can not start server service 0".
///
/// # Ordering
/// Register CORS *after* this middleware (`.wrap(auth).wrap(cors)`): the last `wrap` runs first,
/// so CORS then sees, and decorates, the 401s this middleware answers, and preflight `OPTIONS`
/// requests are answered before authentication.
#[derive(Clone)]
#[must_use]
pub struct CognitoAuth {
    verifier: Verifier,
    config: AuthConfig,
}

impl fmt::Debug for CognitoAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CognitoAuth")
            .field("verifier", &self.verifier)
            .field("realm", &self.config.realm)
            .field("optional", &self.config.optional)
            .field("groups", &self.config.groups)
            .field("scopes", &self.config.scopes)
            .field("step_up", &self.config.step_up)
            .finish_non_exhaustive()
    }
}

impl CognitoAuth {
    /// Requires a valid token on every request, with realm `api`.
    pub fn new(verifier: Verifier) -> Self {
        CognitoAuth {
            verifier,
            config: AuthConfig {
                realm: Arc::from("api"),
                resource_metadata: None,
                params: Arc::from("realm=\"api\""),
                optional: false,
                accept: Accept::default(),
                source: Arc::default(),
                groups: None,
                groups_pool: None,
                scopes: None,
                predicates: Vec::new(),
                step_up: None,
                error_handler: None,
            },
        }
    }

    /// The realm named in `WWW-Authenticate` (default `api`). Printable ASCII without `"` or `\`.
    #[track_caller]
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        let realm = realm.into();
        if realm.is_empty() || !realm.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\') {
            misconfigured(format!("realm {realm:?} must be non-empty printable ASCII without '\"' or '\\'"));
        }
        self.config.realm = Arc::from(realm);
        self.config.render_params();
        self
    }

    /// Adds `resource_metadata="{url}"` (RFC 9728) to the `WWW-Authenticate` challenge of every
    /// 401 and 403, so that clients can discover the authorization server: the URL where
    /// [`ResourceMetadata::service`](crate::ResourceMetadata::service) serves the document
    /// ([`ResourceMetadata::url`](crate::ResourceMetadata::url)).
    #[track_caller]
    pub fn resource_metadata(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        let absolute = url.parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
        });
        if !absolute || url.contains('"') || url.contains('\\') {
            misconfigured(format!("resource_metadata {url:?} must be an absolute http(s) URL"));
        }
        self.config.resource_metadata = Some(url);
        self.config.render_params();
        self
    }

    /// Lets requests without any token through as anonymous (handlers can take
    /// `Option<CognitoUser>`). A request *with* a token must still present a good one.
    pub fn optional(mut self) -> Self {
        self.config.optional = true;
        self
    }

    /// Also accepts machine (client-credentials) tokens on these routes, verified locally only
    /// (they cannot be revoked before `exp`). Handlers tell them apart by taking
    /// [`Principal`] or [`MachineClient`](crate::MachineClient); a `CognitoUser` extractor
    /// answers 403 to a machine. Needs the verifier's signature check.
    #[track_caller]
    pub fn allow_machine_tokens(mut self) -> Self {
        if self.verifier.jwks_url().is_none() {
            misconfigured(
                "allow_machine_tokens needs the verifier's signature check: remove `.signature_check(false)`"
                    .into(),
            );
        }
        self.config.accept.machines = true;
        self
    }

    /// Also accepts ID tokens, as many Amplify front ends send (and API Gateway's Cognito
    /// authorizer takes). No Cognito API accepts an ID token, so one is verified **locally
    /// only**: signature, `iss`, `aud` among the app clients, `token_use` = `id`, `exp`. It
    /// **cannot be revoked before it expires** (a sign-out, a disabled or a deleted user go
    /// unnoticed until then) and carries the attributes of sign-in time. Handlers take
    /// [`IdTokenUser`](crate::IdTokenUser) or [`Principal`]; group requirements apply. Routes
    /// that do not call this refuse ID tokens locally. Needs the verifier's signature check.
    #[track_caller]
    pub fn allow_id_tokens(mut self) -> Self {
        if self.verifier.jwks_url().is_none() {
            misconfigured(
                "allow_id_tokens needs the verifier's signature check: remove `.signature_check(false)`"
                    .into(),
            );
        }
        self.config.accept.id_tokens = true;
        self
    }

    /// Also reads the token from this cookie when there is no `Authorization` header.
    pub fn token_from_cookie(mut self, name: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.config.source).cookie = Some(name.into());
        self
    }

    /// Also reads the token from this header (the bare token, no scheme) when there is no
    /// `Authorization` header.
    #[track_caller]
    pub fn token_from_header(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        match HeaderName::try_from(name.as_str()) {
            Ok(h) if h != header::AUTHORIZATION => Arc::make_mut(&mut self.config.source).header = Some(h),
            _ => misconfigured(format!("token_from_header: {name:?} is not a usable header name")),
        }
        self
    }

    #[track_caller]
    fn require_names(self, kind: &'static str, wants: Vec<String>, all: bool) -> Self {
        if wants.is_empty() || wants.iter().any(String::is_empty) {
            misconfigured(format!("require_*_{kind}: give at least one non-empty name"));
        }
        let req = if all { Requirement::All(wants) } else { Requirement::Any(wants) };
        let mut this = self;
        let slot = if kind == "groups" { &mut this.config.groups } else { &mut this.config.scopes };
        if slot.is_some() {
            misconfigured(format!("require_*_{kind} was called twice"));
        }
        *slot = Some(req);
        this
    }

    /// Requires the user to be in at least one of these groups (`cognito:groups`), else 403.
    ///
    /// # Group freshness
    /// Groups are those of the token as issued: `GetUser` does not report them. Removing a user
    /// from a group takes effect when their current tokens expire or are revoked. Keep access
    /// tokens short-lived, or sign the user out after a group change
    /// ([`Verifier::global_sign_out`](crate::Verifier::global_sign_out), or Cognito's
    /// `AdminUserGlobalSignOut` followed by [`Verifier::invalidate_user`](crate::Verifier::invalidate_user)).
    #[track_caller]
    pub fn require_any_group<I: IntoIterator<Item = S>, S: Into<String>>(self, groups: I) -> Self {
        self.require_names("groups", groups.into_iter().map(Into::into).collect(), false)
    }

    /// Requires the user to be in at least one of these groups **of this user pool**, else 403:
    /// with several pools ([`VerifierBuilder::pool`](crate::VerifierBuilder::pool)), a group
    /// requirement without a pool is met by a group of that name in any of them (pool 2's
    /// `admin` opens a route that requires `admin`). Panics if the verifier has no such pool.
    #[track_caller]
    pub fn require_any_group_in<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        pool_id: &str,
        groups: I,
    ) -> Self {
        self.in_pool(pool_id).require_any_group(groups)
    }

    /// Requires the user to be in every one of these groups of this user pool, else 403; see
    /// [`require_any_group_in`](Self::require_any_group_in).
    #[track_caller]
    pub fn require_all_groups_in<I: IntoIterator<Item = S>, S: Into<String>>(
        self,
        pool_id: &str,
        groups: I,
    ) -> Self {
        self.in_pool(pool_id).require_all_groups(groups)
    }

    #[track_caller]
    fn in_pool(mut self, pool_id: &str) -> Self {
        if !self.verifier.user_pool_ids().any(|p| p == pool_id) {
            let pools: Vec<&str> = self.verifier.user_pool_ids().collect();
            misconfigured(format!(
                "require_*_group_in: {pool_id:?} is not one of the verifier's pools {pools:?}"
            ));
        }
        self.config.groups_pool = Some(Arc::from(pool_id));
        self
    }

    /// Requires the user to be in every one of these groups, else 403. Groups are those of the
    /// token as issued; see [`require_any_group`](Self::require_any_group) for what that means
    /// after a group change.
    #[track_caller]
    pub fn require_all_groups<I: IntoIterator<Item = S>, S: Into<String>>(self, groups: I) -> Self {
        self.require_names("groups", groups.into_iter().map(Into::into).collect(), true)
    }

    /// Requires the token to carry at least one of these scopes, else 403.
    #[track_caller]
    pub fn require_any_scope<I: IntoIterator<Item = S>, S: Into<String>>(self, scopes: I) -> Self {
        self.require_names("scopes", scopes.into_iter().map(Into::into).collect(), false)
    }

    /// Requires the token to carry every one of these scopes, else 403.
    #[track_caller]
    pub fn require_all_scopes<I: IntoIterator<Item = S>, S: Into<String>>(self, scopes: I) -> Self {
        self.require_names("scopes", scopes.into_iter().map(Into::into).collect(), true)
    }

    /// Requires the principal to satisfy `predicate` (over any claim, attribute, group or
    /// scope), else 403 `insufficient_scope`. Several `require`s must all hold; they run after
    /// the group and scope requirements.
    ///
    /// ```no_run
    /// # let verifier: actix_cognito::Verifier = unimplemented!();
    /// use actix_cognito::CognitoAuth;
    /// // A claim added by a pre-token-generation trigger.
    /// let auth = CognitoAuth::new(verifier)
    ///     .require(|p| p.claim::<String>("tenant_tier").as_deref() == Some("gold"));
    /// ```
    pub fn require(mut self, predicate: impl Fn(&Principal) -> bool + Send + Sync + 'static) -> Self {
        self.config.predicates.push(Arc::new(predicate));
        self
    }

    /// Requires the sign-in to have reached one of these authentication levels (`acr`, such as
    /// `urn:cognito:loa:3`), else 401 with RFC 9470's step-up challenge:
    /// `error="insufficient_user_authentication"` and `acr_values="..."` (space-separated), so
    /// that the client can sign the user in again with `acr_values`. Cognito adds `acr` and
    /// `amr` to the tokens of a sign-in that asked for a level (managed login's `acr_values`).
    ///
    /// The requirement is checked after the token is verified: an invalid or revoked token still
    /// gets `invalid_token`. It is checked after the group, scope and [`require`](Self::require)
    /// requirements, since signing in again cannot meet those. Access and ID tokens carry the
    /// claim; a machine token never meets it (403 `insufficient_scope`). Routes without the
    /// requirement accept the same token as before.
    #[track_caller]
    pub fn require_acr<I: IntoIterator<Item = S>, S: Into<String>>(mut self, levels: I) -> Self {
        let levels: Vec<String> = levels.into_iter().map(Into::into).collect();
        let usable =
            |v: &String| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
        if levels.is_empty() || !levels.iter().all(usable) {
            misconfigured(format!(
                "require_acr({levels:?}): give at least one level, each printable ASCII without spaces, '\"' or '\\'"
            ));
        }
        let step_up = self.config.step_up.get_or_insert_with(StepUp::default);
        if !step_up.acr.is_empty() {
            misconfigured("require_acr was called twice".into());
        }
        step_up.acr = levels;
        step_up.render();
        self
    }

    /// Requires the user to have authenticated at most `max_age` ago (`auth_time`), else 401 with
    /// RFC 9470's step-up challenge: `error="insufficient_user_authentication"` and
    /// `max_age=N` (whole seconds), so that the client can have the user sign in again. For
    /// sensitive routes that want a recent sign-in rather than a recent token: refreshing a
    /// token keeps its `auth_time`.
    ///
    /// `auth_time` has whole seconds; `max_age` is rounded down to them and must be at least one.
    /// It is checked as [`require_acr`](Self::require_acr) is.
    #[track_caller]
    pub fn require_max_age(mut self, max_age: std::time::Duration) -> Self {
        if max_age.as_secs() == 0 {
            misconfigured(format!("require_max_age({max_age:?}): give at least one second"));
        }
        let step_up = self.config.step_up.get_or_insert_with(StepUp::default);
        step_up.max_age = Some(max_age.as_secs());
        step_up.render();
        self
    }

    /// Replaces the response to a refused request. The status and body are the handler's; the
    /// `WWW-Authenticate` and `Retry-After` headers are added to whatever it returns.
    pub fn error_handler<F>(mut self, handler: F) -> Self
    where
        F: Fn(&AuthError, &HttpRequest) -> HttpResponse + Send + Sync + 'static,
    {
        self.config.error_handler = Some(Arc::new(handler));
        self
    }
}

/// Ends a builder call with the mistake and its fix: at the line that made it, whether or not a
/// log subscriber is installed.
#[track_caller]
fn misconfigured(message: String) -> ! {
    panic!("CognitoAuth is misconfigured: {message}")
}

impl<S, B> Transform<S, ServiceRequest> for CognitoAuth
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = CognitoAuthService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        // Each worker its own copies of what requests clone, so that the reference counts a
        // request bumps are not shared with another worker's core.
        let mut config = self.config.clone();
        config.params = Arc::from(&*config.params);
        config.source = Arc::new(TokenSource::clone(&config.source));
        ready(Ok(CognitoAuthService {
            service: Rc::new(service),
            state: Rc::new((self.verifier.clone(), config)),
        }))
    }
}

/// The service [`CognitoAuth`] wraps around the routes.
#[doc(hidden)]
pub struct CognitoAuthService<S> {
    service: Rc<S>,
    /// One reference count to bump per request, not two.
    state: Rc<(Verifier, AuthConfig)>,
}

impl AuthConfig {
    fn render_params(&mut self) {
        let mut params = format!("realm=\"{}\"", self.realm);
        if let Some(url) = &self.resource_metadata {
            params.push_str(&format!(", resource_metadata=\"{url}\""));
        }
        self.params = Arc::from(params);
    }
}

/// What the middleware leaves in the request's extensions for the extractors.
#[derive(Clone)]
pub(crate) struct AuthState {
    pub(crate) principal: Option<Principal>,
    /// The challenge parameters, for the extractors' refusals.
    pub(crate) params: Arc<str>,
    /// Where the token was read from, for the [`BearerToken`](crate::BearerToken) extractor.
    pub(crate) source: Arc<TokenSource>,
}

impl<S, B> Service<ServiceRequest> for CognitoAuthService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = Rc::clone(&self.service);
        let state = Rc::clone(&self.state);
        Box::pin(async move {
            let (verifier, config) = &*state;
            match authenticate(verifier, config, &req).await {
                Ok(principal) => {
                    req.extensions_mut().insert(AuthState {
                        principal,
                        params: config.params.clone(),
                        source: config.source.clone(),
                    });
                    service.call(req).await.map(ServiceResponse::map_into_left_body)
                }
                Err(err) => {
                    let response = match &config.error_handler {
                        Some(handler) => {
                            let mut response = handler(&err, req.request());
                            err.add_headers(response.headers_mut());
                            response
                        }
                        None => err.error_response(),
                    };
                    Ok(req.into_response(response).map_into_right_body())
                }
            }
        })
    }
}

/// The token of a request: `Authorization: Bearer`, else the configured cookie or header.
pub(crate) fn find_token<'r>(
    req: &'r HttpRequest,
    config: &TokenSource,
) -> Result<Option<Cow<'r, [u8]>>, AuthErrorKind> {
    let mut values = req.headers().get_all(header::AUTHORIZATION);
    match (values.next(), values.next()) {
        (Some(_), Some(_)) => {
            return Err(AuthErrorKind::InvalidRequest("more than one Authorization header"))
        }
        // A bearer token, possibly empty or followed by garbage: the verifier refuses those.
        (Some(value), None) => {
            if let Some(token) = strip_bearer(value.as_bytes()) {
                return Ok(Some(Cow::Borrowed(token)));
            }
        }
        (None, _) => {}
    }
    if let Some(name) = &config.header {
        if let Some(value) = req.headers().get(name) {
            return Ok(Some(Cow::Borrowed(value.as_bytes())));
        }
    }
    if let Some(name) = &config.cookie {
        if let Some(cookie) = req.cookie(name) {
            return Ok(Some(Cow::Owned(cookie.value().as_bytes().to_vec())));
        }
    }
    Ok(None)
}

async fn authenticate(
    verifier: &Verifier,
    config: &AuthConfig,
    req: &ServiceRequest,
) -> Result<Option<Principal>, AuthError> {
    let fail = |kind| AuthError { kind, params: config.params.clone(), extra: None };
    let token = match find_token(req.request(), &config.source).map_err(fail)? {
        Some(token) => token,
        None if config.optional => return Ok(None),
        None => return Err(fail(AuthErrorKind::MissingToken)),
    };
    // One span per verification, with its outcome, whether the cache answered and how long it
    // took; disabled spans cost a branch. The token is never a field.
    let span = tracing::debug_span!(
        target: "actix_cognito",
        "cognito_verify",
        outcome = tracing::field::Empty,
        cache_hit = tracing::field::Empty,
        latency_us = tracing::field::Empty,
    );
    let started = (!span.is_disabled()).then(Instant::now);
    let (verdict, cache_hit) = verifier.verify_traced(&token, config.accept).instrument(span.clone()).await;
    if let Some(started) = started {
        let outcome = match &verdict {
            Ok(_) => "accepted",
            Err(VerifyError::Rejected(r)) => r.as_str(),
            Err(VerifyError::Unavailable(u)) => u.kind().as_str(),
        };
        let latency_us = started.elapsed().as_micros() as u64;
        span.record("outcome", outcome).record("cache_hit", cache_hit).record("latency_us", latency_us);
        span.in_scope(|| tracing::debug!(target: "actix_cognito", outcome, cache_hit, latency_us, "verified an access token"));
    }
    let principal = verdict.map_err(|e| match e {
        VerifyError::Rejected(r) => fail(AuthErrorKind::InvalidToken(r)),
        VerifyError::Unavailable(u) => fail(AuthErrorKind::Unavailable(u)),
    })?;
    if let Some(groups) = &config.groups {
        let in_pool = config.groups_pool.as_deref().is_none_or(|pool| principal.pool_id() == Some(pool));
        if !in_pool || !groups.met_by(principal.groups()) {
            return Err(fail(AuthErrorKind::InsufficientScope));
        }
    }
    if let Some(scopes) = &config.scopes {
        if !scopes.met_by(principal.scopes()) {
            let mut err = fail(AuthErrorKind::InsufficientScope);
            err.extra = Some(Arc::from(format!(", scope=\"{}\"", scopes.names().join(" "))));
            return Err(err);
        }
    }
    if !config.predicates.iter().all(|p| p(&principal)) {
        return Err(fail(AuthErrorKind::InsufficientScope));
    }
    if let Some(step_up) = &config.step_up {
        if let Some(why) = step_up.unmet(&principal, crate::clock::unix_now()) {
            if principal.machine().is_some() {
                return Err(fail(AuthErrorKind::InsufficientScope));
            }
            let mut err = fail(AuthErrorKind::InsufficientUserAuthentication(why));
            err.extra = Some(step_up.params.clone());
            return Err(err);
        }
    }
    Ok(Some(principal))
}

/// A refused request, and the answer it gets.
#[derive(Debug)]
pub struct AuthError {
    kind: AuthErrorKind,
    params: Arc<str>,
    /// Parameters of the challenge past `error_description`: the scopes or the step-up wanted.
    extra: Option<Arc<str>>,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthErrorKind {
    /// No token was presented (401, no error code).
    MissingToken,
    /// The request is malformed, such as carrying two `Authorization` headers (400).
    InvalidRequest(&'static str),
    /// The token was refused (401, `invalid_token`).
    InvalidToken(Rejection),
    /// The user lacks a required group or scope (403, `insufficient_scope`).
    InsufficientScope,
    /// The sign-in is below the route's authentication level or too old (401,
    /// `insufficient_user_authentication`, RFC 9470): the client should have the user sign in
    /// again with the `acr_values` or `max_age` of the challenge. Says which.
    InsufficientUserAuthentication(&'static str),
    /// Cognito could not be asked (503, `Retry-After`).
    Unavailable(Unavailable),
    /// A `CognitoUser` extractor ran on a route without the middleware (500): a wiring mistake.
    MiddlewareMissing,
}

impl AuthError {
    pub(crate) fn new(kind: AuthErrorKind, params: Arc<str>) -> Self {
        AuthError { kind, params, extra: None }
    }

    /// Why the request was refused.
    pub fn kind(&self) -> &AuthErrorKind {
        &self.kind
    }

    /// The HTTP status of the answer: 400, 401, 403, 500 or 503 (the same as
    /// `ResponseError::status_code`, without importing it).
    pub fn status(&self) -> StatusCode {
        match &self.kind {
            AuthErrorKind::MissingToken
            | AuthErrorKind::InvalidToken(_)
            | AuthErrorKind::InsufficientUserAuthentication(_) => StatusCode::UNAUTHORIZED,
            AuthErrorKind::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AuthErrorKind::InsufficientScope => StatusCode::FORBIDDEN,
            AuthErrorKind::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthErrorKind::MiddlewareMissing => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The RFC 6750 error code, or another short code where RFC 6750 has none.
    pub fn code(&self) -> &'static str {
        match &self.kind {
            AuthErrorKind::MissingToken => "unauthorized",
            AuthErrorKind::InvalidRequest(_) => "invalid_request",
            AuthErrorKind::InvalidToken(_) => "invalid_token",
            AuthErrorKind::InsufficientScope => "insufficient_scope",
            AuthErrorKind::InsufficientUserAuthentication(_) => "insufficient_user_authentication",
            AuthErrorKind::Unavailable(_) => "temporarily_unavailable",
            AuthErrorKind::MiddlewareMissing => "server_error",
        }
    }

    /// A short message safe to show the client.
    pub fn message(&self) -> &'static str {
        match &self.kind {
            AuthErrorKind::MissingToken => "an access token is required",
            AuthErrorKind::InvalidRequest(why) => why,
            AuthErrorKind::InvalidToken(r) => r.description(),
            AuthErrorKind::InsufficientScope => "the access token does not grant access to this resource",
            AuthErrorKind::InsufficientUserAuthentication(why) => why,
            AuthErrorKind::Unavailable(_) => "authentication is temporarily unavailable, try again later",
            AuthErrorKind::MiddlewareMissing => "authentication is not configured for this route",
        }
    }

    /// The `WWW-Authenticate` and `Retry-After` headers of the answer.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        let mut challenge = format!("Bearer {}", self.params);
        match &self.kind {
            AuthErrorKind::MissingToken => {}
            AuthErrorKind::InvalidRequest(_)
            | AuthErrorKind::InvalidToken(_)
            | AuthErrorKind::InsufficientScope
            | AuthErrorKind::InsufficientUserAuthentication(_) => {
                challenge.push_str(&format!(
                    ", error=\"{}\", error_description=\"{}\"",
                    self.code(),
                    self.message()
                ));
                if let Some(extra) = &self.extra {
                    challenge.push_str(extra);
                }
            }
            AuthErrorKind::Unavailable(u) => {
                let secs = u.retry_after().as_secs().max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
                return;
            }
            AuthErrorKind::MiddlewareMissing => return,
        }
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            AuthErrorKind::InvalidToken(r) => write!(f, "invalid_token: {r}"),
            AuthErrorKind::Unavailable(u) => write!(f, "temporarily_unavailable: {u}"),
            AuthErrorKind::MiddlewareMissing => f.write_str(
                "a CognitoUser extractor ran on a route that the CognitoAuth middleware does not wrap: \
                 add `.wrap(CognitoAuth::new(verifier))` to the app, scope or resource",
            ),
            _ => write!(f, "{}: {}", self.code(), self.message()),
        }
    }
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        self.status()
    }

    fn error_response(&self) -> HttpResponse<BoxBody> {
        match &self.kind {
            AuthErrorKind::MiddlewareMissing => tracing::error!("{self}"),
            AuthErrorKind::Unavailable(_) => {}
            _ => tracing::debug!(code = self.code(), reason = %self, "request refused"),
        }
        let body = serde_json::json!({ "error": self.code(), "message": self.message() });
        let mut response =
            HttpResponse::build(self.status_code()).content_type("application/json").body(body.to_string());
        self.add_headers(response.headers_mut());
        response
    }
}
