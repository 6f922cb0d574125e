//! OCI's request signatures: draft-cavage-http-signatures-08 with
//! `rsa-sha256`, signing `date (request-target) host` for requests without a
//! body and adding `content-length content-type x-content-sha256` for those
//! with one, in an `Authorization: Signature …` header.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::RSA_PKCS1_SHA256;
use base64::Engine as _;
use credential_provider::{Error, Secret};
use reqwest::Url;
use sha2::{Digest, Sha256};

use crate::keys::PrivateKey;

/// The content type of every body this plugin signs.
pub const JSON: &str = "application/json";

/// Signs requests as one principal.
#[derive(Clone)]
pub struct RequestSigner {
    /// `<tenancy>/<user>/<fingerprint>`, `<tenancy>/fed-x509/<fingerprint>`, or
    /// `ST$<security token>`: a secret in the last case.
    key_id: Secret,
    key: Arc<PrivateKey>,
}

impl fmt::Debug for RequestSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequestSigner([redacted])")
    }
}

impl RequestSigner {
    pub fn new(key_id: String, key: Arc<PrivateKey>) -> RequestSigner {
        RequestSigner { key_id: Secret::new(key_id), key }
    }

    /// The headers to add to a `method` request for `url` carrying `body`:
    /// `date`, the body headers when there is a body, and `authorization`.
    pub fn headers(&self, method: &str, url: &Url, body: Option<&[u8]>) -> Result<Vec<(String, String)>, Error> {
        let date = httpdate::fmt_http_date(std::time::SystemTime::now());
        self.headers_at(method, url, body, &date)
    }

    fn headers_at(
        &self,
        method: &str,
        url: &Url,
        body: Option<&[u8]>,
        date: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let mut signed: Vec<(String, String)> = vec![
            ("date".into(), date.to_string()),
            ("(request-target)".into(), request_target(method, url)),
            ("host".into(), host),
        ];
        if let Some(body) = body {
            let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
            signed.push(("content-length".into(), body.len().to_string()));
            signed.push(("content-type".into(), JSON.into()));
            signed.push(("x-content-sha256".into(), digest));
        }
        let text = signing_string(&signed);
        let pair = self.key.key_pair();
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), text.as_bytes(), &mut signature)
            .map_err(|_| Error::Config("cannot sign the request".into()))?;
        let names: Vec<&str> = signed.iter().map(|(name, _)| name.as_str()).collect();
        let authorization = format!(
            r#"Signature version="1",keyId="{}",algorithm="rsa-sha256",headers="{}",signature="{}""#,
            self.key_id.expose(),
            names.join(" "),
            base64::engine::general_purpose::STANDARD.encode(&signature)
        );
        // `host` is sent by the HTTP client itself, from the same URL.
        let mut headers: Vec<(String, String)> =
            signed.into_iter().filter(|(name, _)| name != "(request-target)" && name != "host").collect();
        headers.push(("authorization".into(), authorization));
        Ok(headers)
    }
}

/// `get /path?query`, as the signature covers it.
fn request_target(method: &str, url: &Url) -> String {
    match url.query() {
        Some(query) => format!("{} {}?{query}", method.to_ascii_lowercase(), url.path()),
        None => format!("{} {}", method.to_ascii_lowercase(), url.path()),
    }
}

/// The lines `name: value`, in order, joined by newlines.
pub fn signing_string(headers: &[(String, String)]) -> String {
    headers.iter().map(|(name, value)| format!("{name}: {value}")).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    // Oracle's published signing example ("Request Signatures" in the OCI
    // documentation). RSASSA-PKCS1-v1_5 is deterministic, so a signer is right
    // exactly when it builds Oracle's signing string and signs it with
    // RSA-SHA256: the strings are checked against Oracle's, the signatures by
    // verifying them with a key made for the test.
    const DATE: &str = "Thu, 05 Jan 2014 21:31:40 GMT";
    const KEY_ID: &str = "ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34";
    const GET_URL: &str = "https://iaas.us-phoenix-1.oraclecloud.com/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q";
    const GET_SIGNING_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa&displayName=TeamXInstances&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\nhost: iaas.us-phoenix-1.oraclecloud.com";
    const POST_URL: &str = "https://iaas.us-phoenix-1.oraclecloud.com/20160918/volumeAttachments";
    const POST_BODY: &str = "{\n    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n}";
    const POST_SIGNING_STRING: &str = "date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): post /20160918/volumeAttachments\nhost: iaas.us-phoenix-1.oraclecloud.com\ncontent-length: 316\ncontent-type: application/json\nx-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=";

    fn signed(method: &str, url: &str, body: Option<&str>) -> (Vec<(String, String)>, Arc<PrivateKey>) {
        let key = Arc::new(PrivateKey::generate().expect("key"));
        let signer = RequestSigner::new(KEY_ID.to_string(), key.clone());
        let url = Url::parse(url).expect("url");
        (signer.headers_at(method, &url, body.map(str::as_bytes), DATE).expect("sign"), key)
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
        headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }

    fn verifies(key: &PrivateKey, signing_string: &str, authorization: &str) -> bool {
        let signature = authorization.rsplit("signature=\"").next().unwrap_or_default().trim_end_matches('"');
        let signature = base64::engine::general_purpose::STANDARD.decode(signature).expect("base64");
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.key_pair().public_key().as_ref())
            .verify(signing_string.as_bytes(), &signature)
            .is_ok()
    }

    #[test]
    fn oracles_get_example() {
        let (headers, key) = signed("GET", GET_URL, None);
        let authorization = header(&headers, "authorization");
        assert!(
            authorization.starts_with(&format!(
                r#"Signature version="1",keyId="{KEY_ID}",algorithm="rsa-sha256",headers="date (request-target) host",signature=""#
            )),
            "{authorization}"
        );
        assert!(verifies(&key, GET_SIGNING_STRING, authorization));
        assert!(!verifies(&key, &GET_SIGNING_STRING.replace("get ", "post "), authorization));
        assert_eq!(header(&headers, "date"), DATE);
    }

    #[test]
    fn oracles_post_example() {
        let (headers, key) = signed("POST", POST_URL, Some(POST_BODY));
        assert_eq!(header(&headers, "x-content-sha256"), "V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=");
        assert_eq!(header(&headers, "content-length"), "316");
        let authorization = header(&headers, "authorization");
        assert!(
            authorization
                .contains(r#"headers="date (request-target) host content-length content-type x-content-sha256""#),
            "{authorization}"
        );
        assert!(verifies(&key, POST_SIGNING_STRING, authorization));
    }

    #[test]
    fn a_port_is_part_of_the_signed_host() {
        let (headers, key) = signed("GET", "http://127.0.0.1:8080/20180419/docker/token", None);
        let expected = format!("date: {DATE}\n(request-target): get /20180419/docker/token\nhost: 127.0.0.1:8080");
        assert!(verifies(&key, &expected, header(&headers, "authorization")));
    }
}
