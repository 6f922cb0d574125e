//! The OCI distribution token handshake, which proves that a credential really
//! grants pull on a repository: `GET /v2/` answers 401 with a
//! `WWW-Authenticate` challenge; the challenge's realm trades the credential
//! for a token scoped `repository:<path>:pull`; and that token must then list
//! the repository's tags. The `check` of GCR, ACR, ICR and OCIR ends with it
//! (ECR's asks ECR's own API for each pull permission instead), OCIR's
//! `TOKEN_VALIDATION` proves each answer with it, and ACR's token exchange
//! starts with its challenge.
//!
//! Calls go to `https://<host>`, or where `CREDENTIAL_PROVIDER_REGISTRY_ENDPOINTS`
//! maps the host. A realm on a mapped host follows the mapping; any other realm
//! must be https (or loopback), or the credential is not sent to it.

use std::collections::BTreeMap;

use reqwest::Url;
use serde::Deserialize;

use crate::check::{CheckStep, Outcome};
use crate::endpoints::{self, Endpoints};
use crate::error::Error;
use crate::http::{Http, Reply};
use crate::image::ImageRef;
use crate::secret::Secret;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lowercase: `bearer` or `basic`.
    pub scheme: String,
    /// The auth parameters (`realm`, `service`, `scope`…), names lowercase.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// Parses `Bearer realm="https://r/token",service="r"` (RFC 7235 auth-params,
    /// quoted or not). Only the first challenge of the header is read.
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, mut rest) = match header.split_once(char::is_whitespace) {
            Some((scheme, rest)) => (scheme, rest.trim_start()),
            None => (header, ""),
        };
        if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return None;
        }
        let mut params = BTreeMap::new();
        while !rest.is_empty() {
            let (name, after) = rest.split_once('=')?;
            let name = name.trim().to_ascii_lowercase();
            let after = after.trim_start();
            let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next()?.1),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end?..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim().to_string(), &after[end..])
            };
            params.insert(name, value);
            rest = remainder.trim_start();
            match rest.strip_prefix(',') {
                Some(next) => rest = next.trim_start(),
                None if rest.is_empty() => {}
                // A second challenge follows; the first is enough.
                None => break,
            }
        }
        Some(Challenge { scheme: scheme.to_ascii_lowercase(), params })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// The registry at one host, reached through the endpoint overrides.
#[derive(Debug)]
pub struct Registry<'a> {
    http: &'a Http,
    endpoints: &'a Endpoints,
    host: &'a str,
}

/// What `GET /v2/` said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Greeting {
    /// 401 with this challenge.
    Challenge(Challenge),
    /// 200: the registry lets anyone in.
    Open,
}

impl<'a> Registry<'a> {
    /// `host` is `host[:port]`, as in an image reference.
    pub fn new(http: &'a Http, endpoints: &'a Endpoints, host: &'a str) -> Registry<'a> {
        Registry { http, endpoints, host }
    }

    /// The URL of `path` (which starts with `/`) on this registry.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoints.registry(self.host))
    }

    /// `GET /v2/`, unauthenticated.
    pub async fn greet(&self) -> Result<Greeting, Error> {
        let reply = self.http.send("registry", self.http.get(&self.url("/v2/"))).await?;
        if reply.is_success() {
            return Ok(Greeting::Open);
        }
        if reply.status.as_u16() != 401 {
            return Err(reply.error(&format!("registry {} GET /v2/", self.host)));
        }
        let header = reply.header("www-authenticate").unwrap_or_default();
        Challenge::parse(header).map(Greeting::Challenge).ok_or_else(|| {
            Error::cloud(
                format!("registry {}", self.host),
                format!("GET /v2/ answered 401 with no usable challenge ({header:?})"),
            )
        })
    }

    /// Where to send a challenge's realm request: a realm on a host the
    /// registry overrides map follows the map; any other must be https, or
    /// plain http to loopback, before a credential is sent to it.
    pub fn realm_url(&self, realm: &str) -> Result<Url, Error> {
        let refuse = |why: &str| Error::cloud(format!("registry {}", self.host), format!("realm {realm:?} {why}"));
        let url = Url::parse(realm).map_err(|_| refuse("is not a URL"))?;
        let host = url.host_str().ok_or_else(|| refuse("has no host"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        if let Some(base) = self.endpoints.registry_override(&authority) {
            let mut mapped = Url::parse(base).map_err(|_| refuse("maps to an override that is not a URL"))?;
            mapped.set_path(url.path());
            mapped.set_query(url.query());
            return Ok(mapped);
        }
        match url.scheme() {
            "https" => Ok(url),
            "http" if endpoints::is_loopback(host.trim_start_matches('[').trim_end_matches(']')) => Ok(url),
            _ => Err(refuse("is not https; the credential is not sent to it")),
        }
    }

    /// Trades `username`/`password` for a token scoped to pull `repository`.
    pub async fn pull_token(
        &self,
        challenge: &Challenge,
        repository: &str,
        username: &str,
        password: &Secret,
    ) -> Result<Result<Secret, Reply>, Error> {
        let realm = challenge
            .param("realm")
            .ok_or_else(|| Error::cloud(format!("registry {}", self.host), "the challenge names no realm"))?;
        let mut url = self.realm_url(realm)?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = challenge.param("service") {
                query.append_pair("service", service);
            }
            query.append_pair("scope", &format!("repository:{repository}:pull"));
        }
        let request = self.http.get(url.as_str()).basic_auth(username, Some(password.expose()));
        let reply = self.http.send("registry token", request).await?;
        if !reply.is_success() {
            return Ok(Err(reply));
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<Secret>,
            access_token: Option<Secret>,
        }
        let answer: TokenAnswer = reply.json("registry token")?;
        let token = answer
            .token
            .or(answer.access_token)
            .ok_or_else(|| Error::cloud("registry token", "the answer holds no token"))?;
        Ok(Ok(token))
    }

    /// Runs the whole handshake with a credential and reports each step.
    pub async fn check_pull(&self, repository: &str, username: &str, password: &Secret) -> Vec<CheckStep> {
        let mut steps = Vec::new();
        let list_path = format!("/v2/{repository}/tags/list?n=1");
        let greeting = match self.greet().await {
            Ok(greeting) => greeting,
            Err(e) => {
                steps.push(CheckStep::new("registry:challenge", Outcome::Unknown, e.to_string()));
                return steps;
            }
        };
        let list = match greeting {
            Greeting::Open => {
                steps.push(CheckStep::new("registry:challenge", Outcome::Allowed, "GET /v2/ needs no credential"));
                self.http.get(&self.url(&list_path))
            }
            Greeting::Challenge(challenge) if challenge.scheme == "basic" => {
                steps.push(CheckStep::new(
                    "registry:challenge",
                    Outcome::Allowed,
                    "the registry takes the credential as is (Basic)",
                ));
                self.http.get(&self.url(&list_path)).basic_auth(username, Some(password.expose()))
            }
            Greeting::Challenge(challenge) => {
                let realm = challenge.param("realm").unwrap_or("");
                steps.push(CheckStep::new(
                    "registry:challenge",
                    Outcome::Allowed,
                    format!("{} realm {realm}", challenge.scheme),
                ));
                let action = format!("registry:token repository:{repository}:pull");
                match self.pull_token(&challenge, repository, username, password).await {
                    Ok(Ok(token)) => {
                        steps.push(CheckStep::new(action, Outcome::Allowed, "the realm issued a pull token"));
                        self.http.get(&self.url(&list_path)).bearer_auth(token.expose())
                    }
                    Ok(Err(reply)) => {
                        steps.push(CheckStep::new(action, denied_or_unknown(&reply), reply.describe()));
                        return steps;
                    }
                    Err(e) => {
                        steps.push(CheckStep::new(action, Outcome::Unknown, e.to_string()));
                        return steps;
                    }
                }
            }
        };
        let action = format!("registry:pull {repository}");
        let step = match self.http.send("registry", list).await {
            Ok(reply) if reply.is_success() => CheckStep::new(action, Outcome::Allowed, "listed the repository's tags"),
            Ok(reply) if reply.status.as_u16() == 404 => CheckStep::new(
                action,
                Outcome::Denied,
                format!("{} (no such repository, or the identity may not see it)", reply.describe()),
            ),
            Ok(reply) => CheckStep::new(action, denied_or_unknown(&reply), reply.describe()),
            Err(e) => CheckStep::new(action, Outcome::Unknown, e.to_string()),
        };
        steps.push(step);
        steps
    }
}

/// The whole handshake for `image`'s repository, on a client of its own:
/// the last steps of every plugin's `check`.
pub async fn prove_pull(endpoints: &Endpoints, image: &ImageRef, username: &str, password: &Secret) -> Vec<CheckStep> {
    match Http::new() {
        Ok(http) => {
            let host = image.registry();
            Registry::new(&http, endpoints, &host).check_pull(&image.path, username, password).await
        }
        Err(e) => vec![CheckStep::new("registry", Outcome::Unknown, e.to_string())],
    }
}

/// 401 and 403 are a refusal; anything else could not tell.
fn denied_or_unknown(reply: &Reply) -> Outcome {
    match reply.status.as_u16() {
        401 | 403 => Outcome::Denied,
        _ => Outcome::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        let c = Challenge::parse(r#"Bearer realm="https://gcr.io/v2/token",service="gcr.io""#).expect("parses");
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://gcr.io/v2/token"));
        assert_eq!(c.param("service"), Some("gcr.io"));

        let c = Challenge::parse(
            r#"Bearer realm="https://a/t", scope="repository:x/y:pull,push", error="insufficient_scope""#,
        )
        .expect("parses");
        assert_eq!(c.param("scope"), Some("repository:x/y:pull,push"));
        assert_eq!(c.param("error"), Some("insufficient_scope"));

        let c = Challenge::parse(r#"Basic realm="Registry \"R\"""#).expect("parses");
        assert_eq!((c.scheme.as_str(), c.param("realm")), ("basic", Some("Registry \"R\"")));

        let c = Challenge::parse("Bearer realm=https://a/t,service=a").expect("unquoted");
        assert_eq!(c.param("service"), Some("a"));
        assert_eq!(Challenge::parse("Basic").map(|c| c.params.len()), Some(0));

        for bad in ["", "Bearer realm=\"unterminated", "Bearer realm", "B@d realm=x"] {
            assert_eq!(Challenge::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn realms_follow_overrides_and_must_be_https() {
        let endpoints = Endpoints::from_lookup(|name| {
            (name == endpoints::REGISTRY_ENDPOINTS_VARIABLE).then(|| "r.example=http://127.0.0.1:5000".to_string())
        })
        .expect("valid");
        let http = Http::new().expect("client");
        let registry = Registry::new(&http, &endpoints, "r.example");
        assert_eq!(registry.url("/v2/"), "http://127.0.0.1:5000/v2/");
        let mapped = registry.realm_url("https://r.example/oauth2/token?x=1").expect("mapped");
        assert_eq!(mapped.as_str(), "http://127.0.0.1:5000/oauth2/token?x=1");
        assert!(registry.realm_url("https://auth.example/token").is_ok());
        assert!(registry.realm_url("http://127.0.0.1:9/token").is_ok());
        assert!(registry.realm_url("http://auth.example/token").is_err());
        assert!(registry.realm_url("ftp://auth.example/token").is_err());
        assert!(registry.realm_url("not a url").is_err());
    }
}
