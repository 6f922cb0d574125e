//! A fake of the AWS endpoints the ECR plugin calls, on one loopback port:
//! ECR and ECR Public (JSON 1.1, `X-Amz-Target`), STS (query protocol, XML
//! answers), the EC2 instance metadata service (IMDSv2) and EKS Pod
//! Identity's agent (`GET /v1/credentials` with the pod's authorization token).
//!
//! It issues tokens with real expiry times, counts every call, remembers the
//! secrets it handed out (so tests can prove none reached stderr), and can be
//! told to deny an action or to fail token calls in the ways clouds fail.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::aws_iam::{self, Simulation, SourcePolicy};
pub use crate::server::Fault;
use crate::server::{FakeServer, lock, nonce};

/// The account every fake identity belongs to.
pub const ACCOUNT: &str = "123456789012";
/// The role the fake instance profile is named.
pub const IMDS_ROLE: &str = "fake-node-role";
/// The access key id of the fake instance profile's credentials.
pub const IMDS_ACCESS_KEY_ID: &str = "ASIAFAKEIMDSNODE0001";

#[derive(Debug, Default)]
struct AwsState {
    calls: BTreeMap<String, usize>,
    fault: Option<Fault>,
    token_lifetime: Option<Duration>,
    denied: BTreeSet<String>,
    secrets: Vec<String>,
    /// The authorization token EKS Pod Identity's agent accepts.
    pod_identity_token: Option<String>,
    /// The access key id that signed each ECR call, in order.
    signers: Vec<String>,
    /// (role ARN, web identity token) of each AssumeRoleWithWebIdentity.
    assumed: Vec<(String, String)>,
    /// The `RoleSessionName` of each AssumeRoleWithWebIdentity (a trust
    /// policy may name it in an `sts:RoleSessionName` condition).
    session_names: Vec<String>,
    /// The role and session each access key id issued by AssumeRoleWithWebIdentity stands for.
    sessions: BTreeMap<String, (String, String)>,
    /// IAM principals' identity policies, for the policy simulator.
    principal_policies: BTreeMap<String, Vec<SourcePolicy>>,
    /// Every SimulatePrincipalPolicy call, page by page.
    simulations: Vec<Simulation>,
    /// ECR repositories' own policies, by repository name.
    repository_policies: BTreeMap<String, String>,
    issued_passwords: Vec<String>,
}

type Shared = Arc<Mutex<AwsState>>;

/// The fake AWS, running until dropped.
#[derive(Debug)]
pub struct FakeAws {
    server: FakeServer,
    state: Shared,
}

impl Default for FakeAws {
    fn default() -> Self {
        FakeAws::start()
    }
}

impl FakeAws {
    pub fn start() -> FakeAws {
        FakeAws::start_at("127.0.0.1:0")
    }

    /// The fake at `address`: a metadata address inside a test's private
    /// network namespace ([`crate::netns`]).
    pub fn start_at(address: &str) -> FakeAws {
        let state = Shared::default();
        let router = Router::new().fallback(handle).with_state(state.clone());
        FakeAws { server: FakeServer::start_at(router, address), state }
    }

    /// The environment EKS puts in a pod that uses Pod Identity, with the
    /// agent at `url` (`AWS_CONTAINER_CREDENTIALS_FULL_URI` and the token it
    /// checks, which this fake then accepts).
    pub fn pod_identity_env(&self, url: &str) -> Vec<(String, String)> {
        let token = format!("fake-pod-identity-token-{}", nonce());
        {
            let mut state = self.lock();
            state.pod_identity_token = Some(token.clone());
            state.secrets.push(token.clone());
        }
        vec![
            ("AWS_CONTAINER_CREDENTIALS_FULL_URI".into(), url.to_string()),
            ("AWS_CONTAINER_AUTHORIZATION_TOKEN".into(), token),
        ]
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    fn lock(&self) -> MutexGuard<'_, AwsState> {
        lock(&self.state)
    }

    /// The environment that points the AWS SDK at this fake, for every service.
    pub fn endpoint_env(&self) -> Vec<(String, String)> {
        let url = self.url();
        vec![
            ("AWS_ENDPOINT_URL_ECR".into(), url.clone()),
            ("AWS_ENDPOINT_URL_ECR_PUBLIC".into(), url.clone()),
            ("AWS_ENDPOINT_URL_STS".into(), url.clone()),
            ("AWS_ENDPOINT_URL_IAM".into(), url.clone()),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), url),
        ]
    }

    /// Endpoints plus static keys in the environment: the node's identity.
    /// The secret key is registered as a secret the fake handed out.
    pub fn env_with_static_keys(&self) -> Vec<(String, String)> {
        let secret = format!("fake-static-secret-{}", nonce());
        self.lock().secrets.push(secret.clone());
        let mut env = self.endpoint_env();
        env.push(("AWS_ACCESS_KEY_ID".into(), "AKIAFAKESTATICKEY001".into()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), secret));
        env
    }

    /// How many times `operation` was called (`ecr:GetAuthorizationToken`,
    /// `ecr-public:GetAuthorizationToken`, `sts:AssumeRoleWithWebIdentity`,
    /// `imds:token`, `imds:credentials`…).
    pub fn calls(&self, operation: &str) -> usize {
        self.lock().calls.get(operation).copied().unwrap_or(0)
    }

    /// Every token call, ECR and ECR Public together.
    pub fn token_calls(&self) -> usize {
        self.calls("ecr:GetAuthorizationToken") + self.calls("ecr-public:GetAuthorizationToken")
    }

    /// Makes every token call fail this way until cleared with `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.lock().fault = fault;
    }

    /// How long the tokens it issues live (default 12 hours, as ECR's do).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.lock().token_lifetime = Some(lifetime);
    }

    /// Answers `action` (e.g. `ecr:ListImages`) with AccessDeniedException.
    pub fn deny(&self, action: &str) {
        self.lock().denied.insert(action.to_string());
    }

    /// Every secret it handed out or was given: passwords, keys, tokens.
    pub fn secrets(&self) -> Vec<String> {
        self.lock().secrets.clone()
    }

    /// Registers a secret a test created (a service-account token) so that
    /// [`FakeAws::secrets`] includes it.
    pub fn add_secret(&self, secret: &str) {
        self.lock().secrets.push(secret.to_string());
    }

    /// The registry passwords issued, oldest first.
    pub fn issued_passwords(&self) -> Vec<String> {
        self.lock().issued_passwords.clone()
    }

    /// The access key ids that signed ECR calls, oldest first.
    pub fn signers(&self) -> Vec<String> {
        self.lock().signers.clone()
    }

    /// (role, token) of every AssumeRoleWithWebIdentity, oldest first.
    pub fn assumed_roles(&self) -> Vec<(String, String)> {
        self.lock().assumed.clone()
    }

    /// Gives the IAM principal `arn` (a role or a user) the identity policy
    /// `name` with `document` (JSON), for IAM's policy simulator.
    pub fn add_principal_policy(&self, arn: &str, name: &str, kind: &str, document: &str) {
        let policy = SourcePolicy { id: name.into(), kind: kind.into(), document: document.into() };
        self.lock().principal_policies.entry(arn.to_string()).or_default().push(policy);
    }

    /// Gives the repository `name` its own policy (`GetRepositoryPolicy` answers it).
    pub fn set_repository_policy(&self, name: &str, document: &str) {
        self.lock().repository_policies.insert(name.to_string(), document.to_string());
    }

    /// Every SimulatePrincipalPolicy call, page by page, oldest first.
    pub fn simulations(&self) -> Vec<Simulation> {
        self.lock().simulations.clone()
    }

    /// The `RoleSessionName` of every AssumeRoleWithWebIdentity, oldest first.
    pub fn role_session_names(&self) -> Vec<String> {
        self.lock().session_names.clone()
    }
}

async fn handle(State(state): State<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    if path.starts_with("/latest/") {
        return imds(&state, &method, &path, &headers);
    }
    if path == "/v1/credentials" {
        return pod_identity(&state, &headers);
    }
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let signer = signer(&headers);
        return match target.split_once('.') {
            Some(("AmazonEC2ContainerRegistry_V20150921", op)) => ecr(&state, "ecr", op, signer, &body).await,
            Some(("SpencerFrontendService", op)) => ecr(&state, "ecr-public", op, signer, &body).await,
            _ => aws_error(400, "UnknownOperationException", &format!("unknown target {target}")),
        };
    }
    let form: BTreeMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    match form.get("Action").map(String::as_str) {
        Some(action) => sts(&state, action, &form, signer(&headers)),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The access key id in a SigV4 `Authorization` header.
fn signer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let credential = value.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_string())
}

fn count(state: &Shared, operation: &str) -> (Option<Fault>, Duration, bool) {
    let mut s = lock(state);
    *s.calls.entry(operation.to_string()).or_default() += 1;
    (s.fault.clone(), s.token_lifetime.unwrap_or(Duration::from_secs(12 * 3600)), s.denied.contains(operation))
}

fn aws_error(status: u16, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "__type": code, "message": message }).to_string();
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [("content-type", "application/x-amz-json-1.1")],
        body,
    )
        .into_response();
    if status == 429 {
        response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
    }
    response
}

fn json(value: serde_json::Value) -> Response {
    (StatusCode::OK, [("content-type", "application/x-amz-json-1.1")], value.to_string()).into_response()
}

fn unix(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs() as f64)
}

async fn ecr(state: &Shared, service: &str, op: &str, signer: Option<String>, body: &[u8]) -> Response {
    let action = format!("{service}:{op}");
    let (fault, lifetime, denied) = count(state, &action);
    if let Some(signer) = signer {
        lock(state).signers.push(signer);
    }
    if denied {
        return aws_error(
            400,
            "AccessDeniedException",
            &format!("User: arn:aws:iam::{ACCOUNT}:user/fake is not authorized to perform: {action} on resource: *"),
        );
    }
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let repository = request["repositoryName"].as_str().unwrap_or("").to_string();
    match op {
        "GetAuthorizationToken" => {
            let mut expires = SystemTime::now() + lifetime;
            match fault {
                Some(Fault::Status(status)) => {
                    let code = if status == 429 { "ThrottlingException" } else { "ServerException" };
                    return aws_error(status, code, "the fake was told to fail");
                }
                Some(Fault::Slow(delay)) => tokio::time::sleep(delay).await,
                Some(Fault::Garbage) => {
                    return (StatusCode::OK, [("content-type", "application/x-amz-json-1.1")], "<html>oops")
                        .into_response();
                }
                Some(Fault::Expired) => expires = SystemTime::now() - Duration::from_secs(3600),
                Some(Fault::Reset) => crate::server::reset_connection(),
                Some(Fault::Oversized) => return crate::server::oversized_json(),
                Some(Fault::Truncated) => {
                    return (
                        StatusCode::OK,
                        [("content-type", "application/x-amz-json-1.1")],
                        "{\"authorizationData\": [{\"author",
                    )
                        .into_response();
                }
                None => {}
            }
            let password = format!("fake-ecr-password-{}", nonce());
            let token = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
            {
                let mut s = lock(state);
                s.issued_passwords.push(password.clone());
                s.secrets.push(password);
                s.secrets.push(token.clone());
            }
            let data = serde_json::json!({
                "authorizationToken": token,
                "expiresAt": unix(expires),
                "proxyEndpoint": format!("https://{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"),
            });
            if service == "ecr" {
                json(serde_json::json!({ "authorizationData": [data] }))
            } else {
                json(serde_json::json!({ "authorizationData": data }))
            }
        }
        "BatchCheckLayerAvailability" => json(serde_json::json!({ "layers": [], "failures": [] })),
        "GetDownloadUrlForLayer" => {
            aws_error(400, "LayersNotFoundException", "The specified layers could not be found.")
        }
        "GetRepositoryPolicy" => match lock(state).repository_policies.get(&repository) {
            Some(policy) => json(serde_json::json!({
                "registryId": ACCOUNT,
                "repositoryName": repository,
                "policyText": policy,
            })),
            None => aws_error(
                400,
                "RepositoryPolicyNotFoundException",
                "Repository policy does not exist for the repository",
            ),
        },
        "DescribeRepositories" => json(serde_json::json!({
            "repositories": [{
                "repositoryName": repository,
                "registryId": ACCOUNT,
                "repositoryArn": format!("arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{repository}"),
                "repositoryUri": format!("{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/{repository}"),
            }]
        })),
        "ListImages" => json(serde_json::json!({ "imageIds": [] })),
        "BatchGetImage" => json(serde_json::json!({ "images": [], "failures": [] })),
        _ => aws_error(400, "UnknownOperationException", &format!("the fake does not do {action}")),
    }
}

fn xml(body: String) -> Response {
    (StatusCode::OK, [("content-type", "text/xml")], body).into_response()
}

fn sts(state: &Shared, action: &str, form: &BTreeMap<String, String>, signer: Option<String>) -> Response {
    // The Query APIs of STS and IAM share the fake's endpoint.
    let service = if action == "SimulatePrincipalPolicy" { "iam" } else { "sts" };
    let operation = format!("{service}:{action}");
    let (_, _, denied) = count(state, &operation);
    if denied {
        // Echo the token, as a careless server might: the plugin must scrub it.
        let token = form.get("WebIdentityToken").map(String::as_str).unwrap_or("");
        return sts_error(403, "AccessDenied", &format!("not authorized to perform {operation} with token {token}"));
    }
    match action {
        "SimulatePrincipalPolicy" => {
            let result = {
                let s = lock(state);
                aws_iam::simulate(&s.principal_policies, form)
            };
            match result {
                Ok((body, simulation)) => {
                    lock(state).simulations.push(simulation);
                    xml(body)
                }
                Err((status, code, message)) => sts_error(status, code, &message),
            }
        }
        "AssumeRoleWithWebIdentity" => {
            let role = form.get("RoleArn").cloned().unwrap_or_default();
            let token = form.get("WebIdentityToken").cloned().unwrap_or_default();
            if token.is_empty() || !role.starts_with("arn:aws:iam::") {
                return sts_error(400, "InvalidIdentityToken", "missing token or role");
            }
            let Some(session_name) = form.get("RoleSessionName").filter(|name| !name.is_empty()).cloned() else {
                return sts_error(
                    400,
                    "ValidationError",
                    "1 validation error detected: Value null at 'roleSessionName'",
                );
            };
            let n = nonce();
            let (key_id, secret, session) = (
                format!("ASIAFAKEROLE{}", &n[..8].to_uppercase()),
                format!("fake-role-secret-{n}"),
                format!("fake-role-session-{n}"),
            );
            {
                let mut s = lock(state);
                s.assumed.push((role.clone(), token));
                s.sessions.insert(key_id.clone(), (role.clone(), session_name.clone()));
                s.session_names.push(session_name);
                s.secrets.push(secret.clone());
                s.secrets.push(session.clone());
            }
            let expiration = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3600));
            xml(format!(
                r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <Credentials>
      <AccessKeyId>{key_id}</AccessKeyId>
      <SecretAccessKey>{secret}</SecretAccessKey>
      <SessionToken>{session}</SessionToken>
      <Expiration>{expiration}</Expiration>
    </Credentials>
    <AssumedRoleUser>
      <Arn>{role}/ecr-credential-provider</Arn>
      <AssumedRoleId>AROAFAKE:ecr-credential-provider</AssumedRoleId>
    </AssumedRoleUser>
    <SubjectFromWebIdentityToken>system:serviceaccount:default:puller</SubjectFromWebIdentityToken>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#
            ))
        }
        "GetCallerIdentity" => {
            // Whoever signed: a session of an assumed role, else the node's user.
            let session = signer.and_then(|key| lock(state).sessions.get(&key).cloned());
            let arn = match session {
                Some((role, session)) => {
                    let name = role.rsplit('/').next().unwrap_or_default();
                    format!("arn:aws:sts::{ACCOUNT}:assumed-role/{name}/{session}")
                }
                None => format!("arn:aws:iam::{ACCOUNT}:user/fake"),
            };
            xml(format!(
                r#"<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <GetCallerIdentityResult>
    <Arn>{arn}</Arn>
    <UserId>AIDAFAKE</UserId>
    <Account>{ACCOUNT}</Account>
  </GetCallerIdentityResult>
  <ResponseMetadata><RequestId>fake</RequestId></ResponseMetadata>
</GetCallerIdentityResponse>"#
            ))
        }
        _ => sts_error(400, "InvalidAction", &format!("the fake does not do {operation}")),
    }
}

fn sts_error(status: u16, code: &str, message: &str) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        [("content-type", "text/xml")],
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fake</RequestId></ErrorResponse>"
        ),
    )
        .into_response()
}

/// EKS Pod Identity's agent: the pod's role credentials for its token.
fn pod_identity(state: &Shared, headers: &HeaderMap) -> Response {
    let given = headers.get("authorization").and_then(|v| v.to_str().ok());
    if given.is_none() || given != lock(state).pod_identity_token.as_deref() {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    count(state, "pod-identity:credentials");
    let (access, secret, session) = temporary_keys(state, "pod");
    let expiration = SystemTime::now() + Duration::from_secs(6 * 3600);
    let body = serde_json::json!({
        "AccessKeyId": access,
        "SecretAccessKey": secret,
        "Token": session,
        "AccountId": ACCOUNT,
        "Expiration": humantime::format_rfc3339_seconds(expiration).to_string(),
    });
    (StatusCode::OK, body.to_string()).into_response()
}

/// A fresh access key id, secret key and session token named for `who`;
/// the secret and the token are remembered as secrets handed out.
fn temporary_keys(state: &Shared, who: &str) -> (String, String, String) {
    let n = nonce();
    let (secret, session) = (format!("fake-{who}-secret-{n}"), format!("fake-{who}-token-{n}"));
    let mut s = lock(state);
    s.secrets.push(secret.clone());
    s.secrets.push(session.clone());
    (format!("ASIAFAKE{}", who.to_ascii_uppercase()), secret, session)
}

/// IMDSv2: a session token first, then the instance profile's credentials.
fn imds(state: &Shared, method: &Method, path: &str, headers: &HeaderMap) -> Response {
    const TOKEN_PREFIX: &str = "fake-imds-session-";
    if path == "/latest/api/token" && method == Method::PUT {
        count(state, "imds:token");
        let token = format!("{TOKEN_PREFIX}{}", nonce());
        lock(state).secrets.push(token.clone());
        return (StatusCode::OK, [("x-aws-ec2-metadata-token-ttl-seconds", "21600")], token).into_response();
    }
    let authorized = headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with(TOKEN_PREFIX));
    if !authorized {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    let base = "/latest/meta-data/iam/security-credentials/";
    match path.strip_prefix(base) {
        Some("") => (StatusCode::OK, IMDS_ROLE).into_response(),
        Some(role) if role == IMDS_ROLE => {
            count(state, "imds:credentials");
            let (_, secret, session) = temporary_keys(state, "imds");
            let now = SystemTime::now();
            let body = serde_json::json!({
                "Code": "Success",
                "LastUpdated": humantime::format_rfc3339_seconds(now).to_string(),
                "Type": "AWS-HMAC",
                "AccessKeyId": IMDS_ACCESS_KEY_ID,
                "SecretAccessKey": secret,
                "Token": session,
                "Expiration": humantime::format_rfc3339_seconds(now + Duration::from_secs(6 * 3600)).to_string(),
            });
            (StatusCode::OK, body.to_string()).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "").into_response(),
    }
}
