//! The routing table the mock node's router reads (docs/modern.md §5.12), laid out like interledger-rs's Redis
//! keys (`crates/interledger-store/src/redis/mod.rs`):
//!
//! * `current` (`routes:current`): one entry `<account address> → account` per account when it is created; the
//!   CCP route manager ([`super::ccp`]) replaces the whole map with its local table after every change;
//! * `static_routes` (`routes:static`): what `PUT /routes/static` sets (prefix → account);
//! * `default_route` (`routes:default`): the empty prefix, set to the parent when one is added.
//!
//! The router's view merges them in that order, later entries winning (so a static route overrides the same
//! prefix elsewhere). [`RoutingTable::next_hop`] is interledger-rs's `Router`: an exact match first, otherwise
//! the longest prefix the destination **starts with as a string** (`g.alice` matches `g.alicebob`: prefixes are
//! not cut at `.`), the empty prefix matching everything.

use std::collections::HashMap;

use uuid::Uuid;

/// The node's routes.
#[derive(Debug, Default, Clone)]
pub struct RoutingTable {
    /// `routes:current`.
    current: HashMap<String, Uuid>,
    /// `routes:static`.
    static_routes: HashMap<String, Uuid>,
    /// `routes:default`.
    default_route: Option<Uuid>,
}

impl RoutingTable {
    /// Adds an account's own address (what account creation does).
    pub fn add_account_route(&mut self, address: &str, account: Uuid) {
        self.current.insert(address.to_owned(), account);
    }

    /// Moves an account's route from `old` to `new` (what a new node address does to children).
    pub fn move_account_route(&mut self, old: &str, new: &str, account: Uuid) {
        self.current.remove(old);
        self.current.insert(new.to_owned(), account);
    }

    /// Replaces `routes:current` (the CCP route manager's `set_routes`).
    pub fn set_current(&mut self, routes: HashMap<String, Uuid>) {
        self.current = routes;
    }

    /// Sets one static route.
    pub fn set_static_route(&mut self, prefix: &str, account: Uuid) {
        self.static_routes.insert(prefix.to_owned(), account);
    }

    /// Replaces all static routes.
    pub fn set_static_routes(&mut self, routes: HashMap<String, Uuid>) {
        self.static_routes = routes;
    }

    /// The static routes.
    pub fn static_routes(&self) -> &HashMap<String, Uuid> {
        &self.static_routes
    }

    /// Sets the default route.
    pub fn set_default_route(&mut self, account: Uuid) {
        self.default_route = Some(account);
    }

    /// The merged table the router reads (current, then default, then static; later wins).
    pub fn merged(&self) -> HashMap<String, Uuid> {
        let mut merged = self.current.clone();
        if let Some(default) = self.default_route {
            merged.insert(String::new(), default);
        }
        for (prefix, account) in &self.static_routes {
            merged.insert(prefix.clone(), *account);
        }
        merged
    }

    /// interledger-rs's `Router`: exact match, else the longest prefix `destination` starts with.
    pub fn next_hop(&self, destination: &str) -> Option<Uuid> {
        let merged = self.merged();
        if let Some(account) = merged.get(destination) {
            return Some(*account);
        }
        merged
            .iter()
            .filter(|(prefix, _)| prefix.is_empty() || destination.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, account)| *account)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_string_prefix_wins_and_static_overrides() {
        let (a, b, c, d) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let mut t = RoutingTable::default();
        t.add_account_route("g.node.alice", a);
        t.add_account_route("g.node", b);
        assert_eq!(t.next_hop("g.node.alice.x"), Some(a));
        // Not cut at dots, as in interledger-rs.
        assert_eq!(t.next_hop("g.node.alicebob"), Some(a));
        assert_eq!(t.next_hop("g.node.bob"), Some(b));
        assert_eq!(t.next_hop("g.other"), None);
        t.set_default_route(c);
        assert_eq!(t.next_hop("g.other"), Some(c));
        t.set_static_route("g.node.alice", d);
        assert_eq!(t.next_hop("g.node.alice.x"), Some(d));
        t.set_current(HashMap::new());
        assert_eq!(t.next_hop("g.node.bob"), Some(c));
    }
}
