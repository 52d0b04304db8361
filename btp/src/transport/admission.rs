//! Admission of accepted sockets, node-wide (one [`Admission`] per [`BtpEndpoint`](crate::transport::BtpEndpoint),
//! shared by all its listeners): how many sockets may be unauthenticated, in all and per address, which one leaves when
//! that pool is full, how many may be authenticated, and how long an address that failed auth waits before its next
//! attempt is looked at.
//!
//! Unauthenticated and authenticated sockets are two separate pools, so a flood of sockets that never
//! authenticate cannot take the slots of peers, and a socket holds an unauthenticated slot only from
//! `accept()` until its auth is decided.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::{timeout, Instant};

use super::limits::{
    AUTH_FAILURE_MEMORY, AUTH_PENALTY_BASE, AUTH_PENALTY_MAX, DEFAULT_MAX_AUTHENTICATED_SOCKETS,
    DEFAULT_MAX_SOCKETS_PER_PEER, DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
    DEFAULT_MAX_UNAUTHENTICATED_SOCKETS, MAX_PENALTY_ENTRIES,
};

/// How long a new socket waits for the unauthenticated socket it evicted to let go of its slot (it only has
/// to be polled once).
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// Limits on the sockets an endpoint's listeners accept. All of them are shared by every listener of the
/// endpoint. A value of 0 is treated as 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most accepted sockets that have authenticated, over all peers (sockets we dialed are not counted). An
    /// authenticated socket beyond it is refused with `F00 NotAcceptedError {"message":"too many
    /// connections"}`.
    pub max_authenticated: usize,
    /// Most accepted sockets that have not authenticated yet (TLS, websocket handshake, auth). When it is
    /// reached, a new socket evicts the oldest unauthenticated socket of the address that holds the most.
    pub max_unauthenticated: usize,
    /// Most unauthenticated sockets from one address (an IPv4 address, or an IPv6 /64, which one host
    /// usually has whole). A new socket beyond it is closed at once.
    pub max_unauthenticated_per_address: usize,
    /// Most live authenticated sockets one peer may hold (dialed or accepted). Beyond it a newly
    /// authenticated socket is refused with `F00 NotAcceptedError {"message":"too many connections for this
    /// account"}`. Sockets that are closing, or that have not answered a keepalive ping, do not count.
    pub max_sockets_per_peer: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_authenticated: DEFAULT_MAX_AUTHENTICATED_SOCKETS,
            max_unauthenticated: DEFAULT_MAX_UNAUTHENTICATED_SOCKETS,
            max_unauthenticated_per_address: DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS,
            max_sockets_per_peer: DEFAULT_MAX_SOCKETS_PER_PEER,
        }
    }
}

/// The unit the per-address limits count: an IPv4 address (IPv4-mapped IPv6 included) or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct AddressKey(IpAddr);

impl AddressKey {
    pub(crate) fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => AddressKey(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    AddressKey(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

impl std::fmt::Display for AddressKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The unauthenticated sockets by address, oldest first, each with the sender that evicts it.
#[derive(Default)]
struct PreauthTable {
    next_id: u64,
    by_address: HashMap<AddressKey, BTreeMap<u64, oneshot::Sender<()>>>,
}

impl PreauthTable {
    fn count(&self, address: AddressKey) -> usize {
        self.by_address.get(&address).map_or(0, BTreeMap::len)
    }

    fn insert(&mut self, address: AddressKey) -> (u64, oneshot::Receiver<()>) {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = oneshot::channel();
        self.by_address.entry(address).or_default().insert(id, tx);
        (id, rx)
    }

    fn remove(&mut self, address: AddressKey, id: u64) {
        if let Some(sockets) = self.by_address.get_mut(&address) {
            sockets.remove(&id);
            if sockets.is_empty() {
                self.by_address.remove(&address);
            }
        }
    }

    /// Removes the oldest socket of the address with the most (ties: the address whose oldest is oldest) and
    /// returns its eviction sender. A lone socket from an address is thus evicted only when every address
    /// holds one, so one flooding source cannot push out a peer that dials from elsewhere.
    fn pick_victim(&mut self) -> Option<oneshot::Sender<()>> {
        let (&address, _) = self.by_address.iter().max_by(|(_, a), (_, b)| {
            let oldest = |m: &BTreeMap<u64, _>| m.keys().next().copied().unwrap_or(u64::MAX);
            a.len()
                .cmp(&b.len())
                .then_with(|| oldest(b).cmp(&oldest(a)))
        })?;
        let sockets = self.by_address.get_mut(&address)?;
        let (_, tx) = sockets.pop_first()?;
        if sockets.is_empty() {
            self.by_address.remove(&address);
        }
        Some(tx)
    }
}

/// Failed auth attempts by address.
#[derive(Default)]
struct Penalties {
    by_address: HashMap<AddressKey, Strikes>,
}

#[derive(Debug, Clone, Copy)]
struct Strikes {
    /// Failures since the address last authenticated (or since they were forgotten).
    failures: u32,
    /// When the last one happened.
    last: Instant,
}

impl Penalties {
    fn delay(&mut self, address: AddressKey, now: Instant) -> Duration {
        let Some(strikes) = self.by_address.get(&address).copied() else {
            return Duration::ZERO;
        };
        if now.saturating_duration_since(strikes.last) > AUTH_FAILURE_MEMORY {
            self.by_address.remove(&address);
            return Duration::ZERO;
        }
        let doublings = strikes.failures.saturating_sub(1).min(16);
        AUTH_PENALTY_BASE
            .saturating_mul(1 << doublings)
            .min(AUTH_PENALTY_MAX)
    }

    fn failed(&mut self, address: AddressKey, now: Instant) {
        if !self.by_address.contains_key(&address) && self.by_address.len() >= MAX_PENALTY_ENTRIES {
            // Full: forget the address whose last failure is oldest (it is the least likely to retry soon).
            let oldest = self
                .by_address
                .iter()
                .min_by_key(|(_, s)| s.last)
                .map(|(a, _)| *a);
            if let Some(oldest) = oldest {
                self.by_address.remove(&oldest);
            }
        }
        let strikes = self.by_address.entry(address).or_insert(Strikes {
            failures: 0,
            last: now,
        });
        strikes.failures = strikes.failures.saturating_add(1);
        strikes.last = now;
    }

    fn succeeded(&mut self, address: AddressKey) {
        self.by_address.remove(&address);
    }
}

/// The outcome of [`Admission::admit`].
pub(crate) enum Admit {
    /// The socket may run its handshake and auth while it holds this slot.
    Admitted(PreauthSlot),
    /// Its address already has [`ConnectionLimits::max_unauthenticated_per_address`] unauthenticated sockets.
    AddressFull,
    /// The pool was full and no slot came free (an evicted socket did not let go in time).
    Busy,
}

/// Node-wide socket admission (see the module docs).
pub(crate) struct Admission {
    limits: ConnectionLimits,
    unauthenticated: Arc<Semaphore>,
    authenticated: Arc<Semaphore>,
    preauth: Mutex<PreauthTable>,
    penalties: Mutex<Penalties>,
    /// Refused auth attempts since the endpoint was made (for the node's metrics).
    auth_failures: std::sync::atomic::AtomicU64,
}

impl Admission {
    pub(crate) fn new(limits: ConnectionLimits) -> Self {
        let limits = ConnectionLimits {
            max_authenticated: limits.max_authenticated.clamp(1, Semaphore::MAX_PERMITS),
            max_unauthenticated: limits.max_unauthenticated.clamp(1, Semaphore::MAX_PERMITS),
            max_unauthenticated_per_address: limits.max_unauthenticated_per_address.max(1),
            max_sockets_per_peer: limits.max_sockets_per_peer.max(1),
        };
        Admission {
            limits,
            unauthenticated: Arc::new(Semaphore::new(limits.max_unauthenticated)),
            authenticated: Arc::new(Semaphore::new(limits.max_authenticated)),
            preauth: Mutex::new(PreauthTable::default()),
            penalties: Mutex::new(Penalties::default()),
            auth_failures: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Refused auth attempts so far.
    pub(crate) fn auth_failures(&self) -> u64 {
        self.auth_failures
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The limits in force (zeros raised to 1).
    pub(crate) fn limits(&self) -> ConnectionLimits {
        self.limits
    }

    /// Admits a just-accepted socket from `address` as unauthenticated. When the pool is full, the oldest
    /// socket of the address holding the most is evicted and this waits (at most [`EVICTION_WAIT`]) for its
    /// slot, so the pool never holds more sockets than its limit.
    pub(crate) async fn admit(self: &Arc<Self>, address: AddressKey) -> Admit {
        {
            let mut table = lock(&self.preauth);
            if table.count(address) >= self.limits.max_unauthenticated_per_address {
                return Admit::AddressFull;
            }
            if let Ok(permit) = self.unauthenticated.clone().try_acquire_owned() {
                return Admit::Admitted(self.slot(&mut table, address, permit));
            }
            if let Some(victim) = table.pick_victim() {
                let _ = victim.send(());
            }
        }
        let Ok(Ok(permit)) =
            timeout(EVICTION_WAIT, self.unauthenticated.clone().acquire_owned()).await
        else {
            return Admit::Busy;
        };
        let mut table = lock(&self.preauth);
        if table.count(address) >= self.limits.max_unauthenticated_per_address {
            return Admit::AddressFull;
        }
        Admit::Admitted(self.slot(&mut table, address, permit))
    }

    fn slot(
        self: &Arc<Self>,
        table: &mut PreauthTable,
        address: AddressKey,
        permit: OwnedSemaphorePermit,
    ) -> PreauthSlot {
        let (id, evicted) = table.insert(address);
        PreauthSlot {
            admission: self.clone(),
            address,
            id,
            evicted,
            _permit: permit,
        }
    }

    /// A slot in the authenticated pool, or `None` when it is full.
    pub(crate) fn authenticated_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.authenticated.clone().try_acquire_owned().ok()
    }

    /// How long an auth attempt from `address` waits before it is looked at: nothing, or after earlier
    /// failures [`AUTH_PENALTY_BASE`] doubling per failure up to [`AUTH_PENALTY_MAX`].
    pub(crate) fn penalty(&self, address: AddressKey) -> Duration {
        lock(&self.penalties).delay(address, Instant::now())
    }

    /// Records a refused auth attempt from `address`.
    pub(crate) fn auth_failed(&self, address: AddressKey) {
        self.auth_failures
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.penalties).failed(address, Instant::now());
    }

    /// Forgets the failures of `address` (it authenticated).
    pub(crate) fn auth_succeeded(&self, address: AddressKey) {
        lock(&self.penalties).succeeded(address);
    }

    /// Unauthenticated sockets now (for tests and logs).
    pub(crate) fn unauthenticated_count(&self) -> usize {
        self.limits.max_unauthenticated - self.unauthenticated.available_permits()
    }

    /// Authenticated accepted sockets now (for tests and logs).
    pub(crate) fn authenticated_count(&self) -> usize {
        self.limits.max_authenticated - self.authenticated.available_permits()
    }
}

/// An unauthenticated socket's place in the pool; dropping it frees the place.
pub(crate) struct PreauthSlot {
    admission: Arc<Admission>,
    address: AddressKey,
    id: u64,
    evicted: oneshot::Receiver<()>,
    _permit: OwnedSemaphorePermit,
}

impl PreauthSlot {
    /// The address the socket came from.
    pub(crate) fn address(&self) -> AddressKey {
        self.address
    }

    /// Resolves when the socket is evicted to make room for a newer one.
    pub(crate) async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for PreauthSlot {
    fn drop(&mut self) {
        lock(&self.admission.preauth).remove(self.address, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(unauthenticated: usize, per_address: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_authenticated: 2,
            max_unauthenticated: unauthenticated,
            max_unauthenticated_per_address: per_address,
            max_sockets_per_peer: 2,
        }
    }

    fn addr(last: u8) -> AddressKey {
        AddressKey::of(IpAddr::from([10, 0, 0, last]))
    }

    async fn admitted(a: &Arc<Admission>, address: AddressKey) -> PreauthSlot {
        match a.admit(address).await {
            Admit::Admitted(slot) => slot,
            Admit::AddressFull => panic!("{address}: address full"),
            Admit::Busy => panic!("{address}: busy"),
        }
    }

    #[test]
    fn addresses_group_ipv6_by_64_and_unmap_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(AddressKey::of(a), AddressKey::of(b));
        assert_ne!(AddressKey::of(a), AddressKey::of(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().expect("ip");
        assert_eq!(AddressKey::of(mapped), addr(7));
    }

    #[tokio::test]
    async fn one_address_gets_its_share_and_no_more() {
        let a = Arc::new(Admission::new(limits(10, 3)));
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(admitted(&a, addr(1)).await);
        }
        assert!(matches!(a.admit(addr(1)).await, Admit::AddressFull));
        // Another address is not affected; a freed slot is reusable.
        held.push(admitted(&a, addr(2)).await);
        held.remove(0);
        held.push(admitted(&a, addr(1)).await);
        assert_eq!(a.unauthenticated_count(), 4);
    }

    /// Holds `slot` in a task that, like a connection task, lets go of it when it is evicted, and records
    /// `label` in `evicted` then.
    fn hold(slot: PreauthSlot, label: &'static str, evicted: &Arc<Mutex<Vec<&'static str>>>) {
        let evicted = evicted.clone();
        let mut slot = slot;
        tokio::spawn(async move {
            slot.evicted().await;
            lock(&evicted).push(label);
            drop(slot);
        });
    }

    #[tokio::test]
    async fn a_full_pool_evicts_the_oldest_socket_of_the_busiest_address() {
        let a = Arc::new(Admission::new(limits(4, 3)));
        let evicted = Arc::new(Mutex::new(Vec::new()));
        for label in ["flood0", "flood1", "flood2"] {
            hold(admitted(&a, addr(1)).await, label, &evicted);
        }
        hold(admitted(&a, addr(2)).await, "lone", &evicted);
        // Full. Address 1 holds the most: its oldest goes first, then its next.
        hold(admitted(&a, addr(3)).await, "third", &evicted);
        assert_eq!(*lock(&evicted), ["flood0"]);
        hold(admitted(&a, addr(4)).await, "fourth", &evicted);
        assert_eq!(*lock(&evicted), ["flood0", "flood1"]);
        // Now every address holds one: the oldest socket overall goes (flood2, older than "lone").
        hold(admitted(&a, addr(5)).await, "fifth", &evicted);
        assert_eq!(*lock(&evicted), ["flood0", "flood1", "flood2"]);
        assert_eq!(a.unauthenticated_count(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pool_whose_victim_does_not_let_go_is_busy() {
        let a = Arc::new(Admission::new(limits(1, 1)));
        let _stuck = admitted(&a, addr(1)).await;
        assert!(matches!(a.admit(addr(2)).await, Admit::Busy));
    }

    #[tokio::test]
    async fn the_authenticated_pool_is_separate() {
        let a = Arc::new(Admission::new(limits(1, 1)));
        let _unauthenticated = admitted(&a, addr(1)).await;
        let one = a.authenticated_slot();
        let two = a.authenticated_slot();
        assert!(one.is_some() && two.is_some());
        assert!(a.authenticated_slot().is_none(), "max_authenticated is 2");
        drop(one);
        assert!(a.authenticated_slot().is_some());
    }

    #[test]
    fn failures_double_the_delay_up_to_the_cap_and_success_clears_them() {
        let mut p = Penalties::default();
        let t0 = Instant::now();
        assert_eq!(p.delay(addr(1), t0), Duration::ZERO);
        let mut last = Duration::ZERO;
        for i in 0..10 {
            p.failed(addr(1), t0);
            let d = p.delay(addr(1), t0);
            assert!(d >= last && d <= AUTH_PENALTY_MAX, "failure {i}: {d:?}");
            last = d;
        }
        assert_eq!(last, AUTH_PENALTY_MAX);
        assert_eq!(p.delay(addr(2), t0), Duration::ZERO, "per address");
        p.succeeded(addr(1));
        assert_eq!(p.delay(addr(1), t0), Duration::ZERO);
        p.failed(addr(1), t0);
        assert_eq!(p.delay(addr(1), t0), AUTH_PENALTY_BASE);
        let later = t0 + AUTH_FAILURE_MEMORY + Duration::from_secs(1);
        assert_eq!(p.delay(addr(1), later), Duration::ZERO, "forgotten");
    }

    #[test]
    fn the_penalty_table_is_bounded_and_forgets_the_stalest() {
        let mut p = Penalties::default();
        let t0 = Instant::now();
        for i in 0..MAX_PENALTY_ENTRIES as u32 + 10 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            p.failed(AddressKey::of(ip), t0 + Duration::from_millis(u64::from(i)));
        }
        assert_eq!(p.by_address.len(), MAX_PENALTY_ENTRIES);
        let first = AddressKey::of(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000)));
        let newest = AddressKey::of(IpAddr::from(std::net::Ipv4Addr::from(
            0x0a00_0000 + MAX_PENALTY_ENTRIES as u32 + 9,
        )));
        assert!(!p.by_address.contains_key(&first));
        assert!(p.by_address.contains_key(&newest));
    }
}
