//! JWT assertions decode with jsonwebtoken and carry the right claims; the RFC 7523 grant exchanges
//! them at a wiremock token endpoint.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{get, oauth_error, token, token_url, transport};
use integration_auth::{
    AuthContext, AuthLayer, CredentialProvider, JwtAssertion, JwtBearerGrant, JwtClaims, JwtSigner,
};
use integration_core::error::AuthFailed;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use secrecy::SecretString;
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer};

const RSA_PRIVATE: &str = include_str!("fixtures/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa_public.pem");
const HMAC_SECRET: &str = "test-hmac-secret-of-32-bytes-len!";

#[allow(clippy::disallowed_methods)] // Compares JWT NumericDates with the wall clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn jwt_of(provider: &impl CredentialProvider) -> String {
    let credential = provider.credential(&AuthContext::detached()).await.unwrap();
    let mut request = http::Request::new(());
    credential.apply(&mut request).unwrap();
    let header = request.headers()["authorization"].to_str().unwrap();
    header.strip_prefix("Bearer ").unwrap().to_owned()
}

fn decode(jwt: &str, key: &DecodingKey, algorithm: Algorithm, audience: &str) -> Value {
    let mut validation = Validation::new(algorithm);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["app-42"]);
    jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .expect("a valid JWT")
        .claims
}

fn claims() -> JwtClaims {
    JwtClaims::new("app-42")
        .with_subject("installation-7")
        .with_audience("https://api.example.com")
        .with_lifetime(Duration::from_secs(540))
        .with_claim("scope", "repo")
}

fn check_claims(claims: &Value) {
    let now = unix_now();
    assert_eq!(claims["iss"], "app-42");
    assert_eq!(claims["sub"], "installation-7");
    assert_eq!(claims["aud"], "https://api.example.com");
    assert_eq!(claims["scope"], "repo");
    let iat = claims["iat"].as_u64().unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(iat <= now, "iat is not in the future");
    assert!(now - iat <= 62, "iat is backdated by 60 s");
    assert_eq!(exp - iat, 540 + 60);
    assert!(!claims["jti"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn jwt_assertions_decode_and_carry_the_right_claims_hs256() {
    let signer = JwtSigner::hs256(&SecretString::from(HMAC_SECRET)).with_key_id("k1");
    let provider = JwtAssertion::new(signer, claims()).per_request();
    let jwt = jwt_of(&provider).await;
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, Algorithm::HS256);
    assert_eq!(header.kid.as_deref(), Some("k1"));
    let key = DecodingKey::from_secret(HMAC_SECRET.as_bytes());
    check_claims(&decode(
        &jwt,
        &key,
        Algorithm::HS256,
        "https://api.example.com",
    ));
}

#[tokio::test]
async fn jwt_assertions_decode_and_carry_the_right_claims_rs256() {
    let signer = JwtSigner::rs256_pem(&SecretString::from(RSA_PRIVATE)).unwrap();
    let provider = JwtAssertion::new(signer, claims()).per_request();
    let jwt = jwt_of(&provider).await;
    let key = DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
    check_claims(&decode(
        &jwt,
        &key,
        Algorithm::RS256,
        "https://api.example.com",
    ));
}

#[tokio::test]
async fn jwt_assertions_decode_and_carry_the_right_claims_es256() {
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let signer = JwtSigner::es256_pem(&SecretString::from(key_pair.serialize_pem())).unwrap();
    let provider = JwtAssertion::new(signer, claims()).per_request();
    let jwt = jwt_of(&provider).await;
    let key = DecodingKey::from_ec_pem(key_pair.public_key_pem().as_bytes()).unwrap();
    check_claims(&decode(
        &jwt,
        &key,
        Algorithm::ES256,
        "https://api.example.com",
    ));
}

/// Every algorithm the configuration model names signs, and the JWT verifies with the matching
/// public key. Regression: the facade refused all but HS256, RS256 and ES256 at build time, though
/// the model accepted them.
#[tokio::test]
async fn every_algorithm_signs_and_verifies() {
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let hmac = DecodingKey::from_secret(HMAC_SECRET.as_bytes());
    let rsa = DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let ec = DecodingKey::from_ec_pem(p384.public_key_pem().as_bytes()).unwrap();
    let ed = DecodingKey::from_ed_pem(ed25519.public_key_pem().as_bytes()).unwrap();
    let cases = [
        (Algorithm::HS384, HMAC_SECRET.to_owned(), &hmac),
        (Algorithm::HS512, HMAC_SECRET.to_owned(), &hmac),
        (Algorithm::RS384, RSA_PRIVATE.to_owned(), &rsa),
        (Algorithm::RS512, RSA_PRIVATE.to_owned(), &rsa),
        (Algorithm::PS256, RSA_PRIVATE.to_owned(), &rsa),
        (Algorithm::PS512, RSA_PRIVATE.to_owned(), &rsa),
        (Algorithm::ES384, p384.serialize_pem(), &ec),
        (Algorithm::EdDSA, ed25519.serialize_pem(), &ed),
    ];
    for (algorithm, private, public) in cases {
        let signer = JwtSigner::new(algorithm, &SecretString::from(private)).unwrap();
        let provider = JwtAssertion::new(signer, claims()).per_request();
        let jwt = jwt_of(&provider).await;
        assert_eq!(jsonwebtoken::decode_header(&jwt).unwrap().alg, algorithm);
        check_claims(&decode(&jwt, public, algorithm, "https://api.example.com"));
    }
    // A key of another family is a config error that does not quote the key.
    let error = JwtSigner::new(Algorithm::EdDSA, &SecretString::from(RSA_PRIVATE)).unwrap_err();
    assert!(error.is_config());
    assert!(!format!("{error:?} {error}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn per_request_assertions_have_unique_jti_and_cached_ones_are_reused() {
    let signer = JwtSigner::hs256(&SecretString::from(HMAC_SECRET));
    let key = DecodingKey::from_secret(HMAC_SECRET.as_bytes());
    let per_request = JwtAssertion::new(signer.clone(), claims()).per_request();
    let mut ids = HashSet::new();
    for _ in 0..20 {
        let jwt = jwt_of(&per_request).await;
        let claims = decode(&jwt, &key, Algorithm::HS256, "https://api.example.com");
        assert!(
            ids.insert(claims["jti"].as_str().unwrap().to_owned()),
            "jti repeats"
        );
    }
    let cached = JwtAssertion::new(signer, claims());
    assert_eq!(jwt_of(&cached).await, jwt_of(&cached).await);
}

#[test]
fn keys_of_the_wrong_kind_are_config_errors_that_do_not_echo_the_key() {
    let error = JwtSigner::es256_pem(&SecretString::from(RSA_PRIVATE)).unwrap_err();
    assert!(error.is_config());
    assert!(!format!("{error:?} {error}").contains("PRIVATE KEY"));
    assert!(JwtSigner::rs256_pem(&SecretString::from("garbage")).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_grant_exchanges_a_signed_assertion_for_a_token() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/oauth/token"))
        .and(body_string_contains(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
        ))
        .and(body_string_contains("scope=read"))
        .respond_with(token("grant-tok", 3600))
        .expect(1)
        .mount(&server)
        .await;
    let signer = JwtSigner::rs256_pem(&SecretString::from(RSA_PRIVATE)).unwrap();
    let claims = JwtClaims::new("app-42").with_subject("svc@example.com");
    let provider =
        JwtBearerGrant::new(token_url(&server), signer, claims, transport()).with_scopes(["read"]);
    let upstream = common::Upstream::default();
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(upstream.service());
    assert_eq!(
        service.clone().oneshot(get()).await.unwrap().body(),
        "Bearer grant-tok"
    );
    assert_eq!(
        service.oneshot(get()).await.unwrap().body(),
        "Bearer grant-tok"
    );

    // The assertion was signed for the token endpoint.
    let requests = server.received_requests().await.unwrap();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&requests[0].body)
        .into_owned()
        .collect();
    let assertion = &form.iter().find(|(k, _)| k == "assertion").unwrap().1;
    let key = DecodingKey::from_rsa_pem(RSA_PUBLIC.as_bytes()).unwrap();
    let audience = token_url(&server).to_string();
    let claims = decode(assertion, &key, Algorithm::RS256, &audience);
    assert_eq!(claims["sub"], "svc@example.com");
    server.verify().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_grant_invalid_grant_is_final() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(oauth_error("invalid_grant", "Invalid JWT signature."))
        .expect(1)
        .mount(&server)
        .await;
    let signer = JwtSigner::hs256(&SecretString::from(HMAC_SECRET));
    let provider =
        JwtBearerGrant::new(token_url(&server), signer, JwtClaims::new("a"), transport());
    let service = ServiceBuilder::new()
        .layer(AuthLayer::new(provider))
        .service(common::Upstream::default().service());
    let error = service.oneshot(get()).await.unwrap_err();
    let failed = error.downcast_ref::<AuthFailed>().unwrap();
    assert!(failed.is_permanent());
    assert_eq!(failed.code(), Some("invalid_grant"));
    server.verify().await;
}
