//! Property: two credentials never see each other's entries (issue 16), whatever the order of the
//! calls, the paths and the caching directives of the answers.

mod common;

use common::{Upstream, client, get, ok, send};
use http::Request;
use integration_cache::{CacheConfig, CredentialMode};
use proptest::prelude::*;

/// `None`: anonymous; else a credential, in `Authorization`, `Cookie` or a configured API-key
/// header.
fn request(path: usize, credential: Option<usize>) -> Request<String> {
    let mut request = get(&format!("/item/{path}"));
    match credential {
        None => {}
        Some(n) if n % 3 == 0 => {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer t{n}").parse().unwrap());
        }
        Some(n) if n % 3 == 1 => {
            request
                .headers_mut()
                .insert("cookie", format!("session=t{n}").parse().unwrap());
        }
        Some(n) => {
            request
                .headers_mut()
                .insert("x-api-key", format!("t{n}").parse().unwrap());
        }
    }
    request
}

/// Who the upstream believes is asking, from the request it received.
fn who(request: &Request<String>) -> String {
    ["authorization", "cookie", "x-api-key"]
        .iter()
        .find_map(|name| request.headers().get(*name))
        .map_or("anonymous".to_owned(), |v| v.to_str().unwrap().to_owned())
}

const DIRECTIVES: [&str; 4] = [
    "max-age=600",
    "private, max-age=600",
    "no-cache, max-age=600",
    "max-age=600, must-revalidate",
];

fn check(mode: CredentialMode, calls: Vec<(usize, Option<usize>)>, directive: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let cache_control = DIRECTIVES[directive];
        let upstream = Upstream::new(move |_, request| {
            Ok(ok(
                cache_control,
                &format!("{} {}", who(request), request.uri().path()),
            ))
        });
        let config = CacheConfig::new()
            .with_credentials(mode)
            .with_credential_header(http::HeaderName::from_static("x-api-key"));
        let cache = client(&upstream, config);
        for (path, credential) in calls {
            let request = request(path, credential);
            let expected = format!("{} {}", who(&request), request.uri().path());
            let (_, _, body) = send(&cache, request).await.unwrap();
            assert_eq!(
                body, expected,
                "an answer for another credential was served"
            );
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn two_credentials_never_see_each_others_entries(
        calls in prop::collection::vec((0usize..3, prop::option::of(0usize..6)), 1..40),
        directive in 0usize..DIRECTIVES.len(),
    ) {
        check(CredentialMode::Partition, calls, directive);
    }

    /// In the shared mode, only `public`, `s-maxage` or `must-revalidate` answers are shared
    /// (RFC 9111 3.5): `must-revalidate` is excluded here, where sharing is allowed by design.
    #[test]
    fn the_shared_mode_shares_nothing_the_rfc_keeps_private(
        calls in prop::collection::vec((0usize..3, prop::option::of(0usize..6)), 1..40),
        directive in 0usize..3,
    ) {
        check(CredentialMode::Shared, calls, directive);
    }
}
