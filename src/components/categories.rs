//! The one list of categories rapr runs components for. Each line names the category's variant,
//! its `CategoryKind` (in the category's folder), its directory maps and its registry method;
//! `define_categories!` (category.rs) generates everything else. Adding a category is one line
//! here plus its folder and its facade (docs/architecture.md §1.2).

crate::components::category::define_categories! {
    /// `state.*`
    State => crate::components::state::kind::StateKind { ready: state, unavailable: state_unavailable, add: add_state },
    /// `secretstores.*`
    SecretStores => crate::components::secretstores::kind::SecretKind { ready: secrets, unavailable: secrets_unavailable, add: add_secret },
    /// `pubsub.*`
    PubSub => crate::components::pubsub::kind::PubSubKind { ready: pubsubs, unavailable: pubsubs_unavailable, add: add_pubsub },
    /// `echo.*`: a throwaway category that exists only in unit tests (`category_tests.rs`), to
    /// show a category needs nothing outside this line and its own code.
    #[cfg(test)]
    Echo => crate::components::category_tests::EchoKind { ready: echoes, unavailable: echoes_unavailable, add: add_echo },
}
