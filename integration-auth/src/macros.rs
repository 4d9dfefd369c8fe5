//! The builder methods and the provider impl that every cached token grant shares.

/// Implements, for a grant type with `setup: CacheSetup`, `cache: TokenCache` and a `rebuilt()`
/// method, the shared `with_store`/`with_key`/`with_cache_config`/`cache` builders and the
/// [`CredentialProvider`](crate::CredentialProvider) impl. Each grant passes the docs that differ (what
/// its store keeps, what its default key is made of).
macro_rules! cached_grant {
    ($grant:ty, store: $store_doc:literal, key: $key_doc:literal $(,)?) => {
        impl $grant {
            #[doc = $store_doc]
            #[must_use]
            pub fn with_store(mut self, store: ::std::sync::Arc<dyn $crate::TokenStore>) -> Self {
                self.setup.store = store;
                self.rebuilt()
            }

            #[doc = $key_doc]
            #[must_use]
            pub fn with_key(mut self, key: impl Into<String>) -> Self {
                self.setup.key = Some(key.into());
                self.rebuilt()
            }

            /// Cache behaviour: skew, jitter, cool-down, background refresh.
            #[must_use]
            pub fn with_cache_config(mut self, config: $crate::TokenCacheConfig) -> Self {
                self.setup.config = config;
                self.rebuilt()
            }

            /// The token cache (shared by clones).
            pub fn cache(&self) -> &$crate::TokenCache {
                &self.cache
            }
        }

        impl $crate::CredentialProvider for $grant {
            fn credential(&self, ctx: &$crate::AuthContext<'_>) -> $crate::CredentialFuture {
                self.cache.get(ctx)
            }

            fn invalidate(&self, rejected: &$crate::Credential) {
                self.cache.invalidate(rejected);
            }

            /// A token is fetched anew after a rejection: a 401 is worth one replay.
            fn can_renew(&self) -> bool {
                true
            }

            fn cache_key(&self) -> Option<&str> {
                Some(self.cache.key())
            }
        }
    };
}
