//! The Kubernetes side: the Service spreads requests over the ready pods (round robin
//! or random); each pod is the server's batcher (`cluster/src/batcher.rs`): a bounded
//! queue (full: 503), one worker that takes up to `max_batch` texts, waiting at most
//! `max_wait` after the first, runs one forward pass padded to the batch's longest
//! text, answers them all; a request past the server's timeout gets 504. The HPA
//! (`stack/src/local/hpa.rs`, autoscaling/v2 on CPU) syncs every 15 s on the pods'
//! CPU (a pod's worker uses its whole CPU request while a batch runs), tolerance 0.1,
//! scale-down stabilization, min/max. A new pod needs room on a node (allocatable CPU
//! over the pod's request); without room it is Pending, and a Cluster-Autoscaler-like
//! loop (every 10 s) adds nodes, ready after a delay, up to the node group's maximum,
//! and removes a node empty for 10 minutes down to the minimum. A pod starts after the
//! image pull (once per node) and the container start, model load and readiness probe.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::inputs::Inputs;
use super::tally::Tally;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balancing {
    RoundRobin,
    Random,
}

#[derive(Debug, Clone, Serialize)]
pub struct K8sParams {
    pub max_batch: u32,
    pub max_wait_ms: f64,
    pub queue_capacity: u32,
    pub request_timeout_s: f64,
    pub balancing: Balancing,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// HPA off: this many replicas throughout (what a live run had).
    pub fixed_replicas: Option<u32>,
    pub cpu_target: f64,
    pub tolerance: f64,
    pub stabilization_s: f64,
    pub sync_s: f64,
    pub pod_cpu_m: u32,
    pub instance_type: String,
    pub node_cpu_m: u32,
    pub min_nodes: u32,
    pub initial_nodes: u32,
    pub max_nodes: u32,
    /// Cluster Autoscaler's scan → EC2 instance running → node Ready.
    pub node_delay_s: f64,
    /// An empty node is removed after this long (CA's scale-down-unneeded-time).
    pub node_idle_s: f64,
    /// Image pull on a node that does not have it.
    pub image_pull_s: f64,
    /// Container start, model load, first readiness probe.
    pub pod_start_s: f64,
}

impl Default for K8sParams {
    fn default() -> Self {
        Self {
            max_batch: 32,
            max_wait_ms: 0.0,
            queue_capacity: 256,
            request_timeout_s: 10.0,
            balancing: Balancing::RoundRobin,
            min_replicas: 2,
            max_replicas: 6,
            fixed_replicas: None,
            cpu_target: 0.70,
            tolerance: 0.1,
            stabilization_s: 300.0,
            sync_s: 15.0,
            pod_cpu_m: 2000,
            instance_type: "c5.2xlarge".into(),
            // crate::cost::allocatable_m(8), the EKS AMI's reservation.
            node_cpu_m: 7910,
            min_nodes: 1,
            initial_nodes: 2,
            max_nodes: 3,
            node_delay_s: 180.0,
            node_idle_s: 600.0,
            image_pull_s: 30.0,
            pod_start_s: 6.0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct K8sOut {
    /// Node-seconds, provisioning included (EC2 bills from launch).
    pub node_seconds: f64,
    pub pod_seconds: f64,
    pub peak_ready_pods: u64,
    pub peak_pods: u64,
    pub peak_nodes: u64,
    pub pods_started: u64,
    pub nodes_added: u64,
    pub hpa_syncs: u64,
    pub mean_batch: f64,
    pub mean_in_system: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodState {
    Pending,
    Starting,
    Ready,
    Terminating,
    Gone,
}

struct Pod {
    state: PodState,
    node: Option<usize>,
    queue: VecDeque<(u64, u16)>,
    running: Vec<(u64, u16)>,
    busy: bool,
    busy_since: u64,
    /// Busy µs since the last HPA sync (finished batches).
    busy_acc: u64,
    ready_at: u64,
    /// Bumped whenever a batch window starts or ends, so a stale window event is ignored.
    window: u32,
    waiting: bool,
}

struct Node {
    ready: bool,
    gone: bool,
    used_m: u32,
    has_image: bool,
    empty_since: u64,
}

/// An event packed in one integer, so the heap moves 16 bytes and compares once: the
/// time (µs) in the high 64 bits, then the kind (8 bits), the pod or node (24 bits)
/// and the window generation (32 bits). Events at the same µs come out by kind, then
/// pod: a total order, so the run is deterministic whatever the heap's internals.
type Event = u128;

fn event(t: u64, kind: u8, a: u32, b: u32) -> Event {
    assert!(
        a < 1 << 24,
        "pod or node index {a} beyond the event's 24 bits"
    );
    u128::from(t) << 64 | u128::from(kind) << 56 | u128::from(a) << 32 | u128::from(b)
}

/// An event's time, kind, pod or node, and window generation.
fn unpack(e: Event) -> (u64, u8, u32, u32) {
    (
        (e >> 64) as u64,
        (e >> 56) as u8,
        (e >> 32) as u32 & 0xff_ffff,
        e as u32,
    )
}

const EV_DONE: u8 = 0;
const EV_WINDOW: u8 = 1;
const EV_POD_READY: u8 = 2;
const EV_NODE_READY: u8 = 3;
const EV_HPA: u8 = 4;
const EV_CA: u8 = 5;
const EV_TICK: u8 = 6;

struct Sim<'a> {
    p: &'a K8sParams,
    inputs: &'a Inputs,
    rng: &'a mut ChaCha8Rng,
    tally: &'a mut Tally,
    heap: BinaryHeap<Reverse<Event>>,
    pods: Vec<Pod>,
    nodes: Vec<Node>,
    ready: Vec<usize>,
    rr: usize,
    in_system: u64,
    batches: u64,
    batched: u64,
    last_sync: u64,
    recommendations: VecDeque<(u64, u32)>,
    out: K8sOut,
    /// Pods the Deployment counts (Pending, Starting or Ready) and nodes not gone,
    /// kept as counts: the loop reads both at every event and arrival, and a scan of
    /// the pods and nodes there was most of the Kubernetes side's time at 300 pods.
    replicas: u32,
    live_nodes: u64,
}

impl Sim<'_> {
    fn push(&mut self, t: u64, kind: u8, a: u32, b: u32) {
        self.heap.push(Reverse(event(t, kind, a, b)));
    }

    fn live_nodes(&self) -> u64 {
        debug_assert_eq!(
            self.live_nodes,
            self.nodes.iter().filter(|n| !n.gone).count() as u64
        );
        self.live_nodes
    }

    /// Pods the Deployment counts (not terminating or gone).
    fn replicas(&self) -> u32 {
        debug_assert_eq!(
            self.replicas,
            self.pods
                .iter()
                .filter(|p| matches!(
                    p.state,
                    PodState::Pending | PodState::Starting | PodState::Ready
                ))
                .count() as u32
        );
        self.replicas
    }

    fn add_node(&mut self, node: Node) {
        debug_assert!(!node.gone);
        self.nodes.push(node);
        self.live_nodes += 1;
    }

    fn place(&mut self, pod: usize, now: u64) {
        let need = self.p.pod_cpu_m;
        let cap = self.p.node_cpu_m;
        let Some(n) = self
            .nodes
            .iter()
            .position(|n| n.ready && !n.gone && n.used_m + need <= cap)
        else {
            return;
        };
        let node = &mut self.nodes[n];
        node.used_m += need;
        let pull = if node.has_image {
            0.0
        } else {
            self.p.image_pull_s
        };
        node.has_image = true;
        let at = now + ((pull + self.p.pod_start_s) * 1e6) as u64;
        self.pods[pod].node = Some(n);
        self.pods[pod].state = PodState::Starting;
        self.push(at, EV_POD_READY, pod as u32, 0);
    }

    fn new_pod(&mut self, now: u64, ready_now: bool) {
        self.pods.push(Pod {
            state: PodState::Pending,
            node: None,
            queue: VecDeque::new(),
            running: Vec::new(),
            busy: false,
            busy_since: 0,
            busy_acc: 0,
            ready_at: 0,
            window: 0,
            waiting: false,
        });
        self.replicas += 1;
        self.out.pods_started += 1;
        let i = self.pods.len() - 1;
        self.place(i, now);
        if ready_now && self.pods[i].state == PodState::Starting {
            self.pods[i].state = PodState::Ready;
            self.pods[i].ready_at = now;
            self.ready.push(i);
        }
    }

    fn free_node(&mut self, pod: usize, now: u64) {
        if let Some(n) = self.pods[pod].node.take() {
            let node = &mut self.nodes[n];
            node.used_m -= self.p.pod_cpu_m;
            if node.used_m == 0 {
                node.empty_since = now;
            }
        }
    }

    fn terminate(&mut self, pod: usize, now: u64) {
        let was = self.pods[pod].state;
        debug_assert!(matches!(
            was,
            PodState::Pending | PodState::Starting | PodState::Ready
        ));
        self.replicas -= 1;
        self.ready.retain(|&r| r != pod);
        if was == PodState::Ready && (self.pods[pod].busy || !self.pods[pod].queue.is_empty()) {
            self.pods[pod].state = PodState::Terminating;
        } else {
            self.pods[pod].state = PodState::Gone;
            self.free_node(pod, now);
        }
    }

    /// The worker picks its next batch, or waits for more texts, or idles.
    fn next_batch(&mut self, i: usize, now: u64) {
        let p = self.p;
        let pod = &mut self.pods[i];
        if pod.busy || pod.queue.is_empty() {
            if pod.state == PodState::Terminating && !pod.busy && pod.queue.is_empty() {
                pod.state = PodState::Gone;
                self.free_node(i, now);
            }
            return;
        }
        if p.max_wait_ms > 0.0 && !pod.waiting && (pod.queue.len() as u32) < p.max_batch {
            pod.waiting = true;
            pod.window += 1;
            let w = pod.window;
            self.push(
                now + (p.max_wait_ms * 1000.0) as u64,
                EV_WINDOW,
                i as u32,
                w,
            );
            return;
        }
        pod.waiting = false;
        pod.window += 1;
        let timeout = (p.request_timeout_s * 1e6) as u64;
        pod.running.clear();
        let mut max_tok = 0u16;
        while (pod.running.len() as u32) < p.max_batch {
            let Some((at, tok)) = pod.queue.pop_front() else {
                break;
            };
            if now.saturating_sub(at) >= timeout {
                // The handler answered 504 at the deadline.
                let over = self.inputs.k8s_overhead_ms.sample(self.rng);
                self.tally
                    .record(at, timeout + (over * 1000.0) as u64, Some("504"));
                self.in_system -= 1;
                continue;
            }
            max_tok = max_tok.max(tok);
            pod.running.push((at, tok));
        }
        if pod.running.is_empty() {
            return self.next_batch(i, now);
        }
        let n = pod.running.len();
        let ms = self
            .inputs
            .k8s_batch
            .sample((n * usize::from(max_tok)) as f64, self.rng);
        pod.busy = true;
        pod.busy_since = now;
        self.batches += 1;
        self.batched += n as u64;
        self.push(now + (ms * 1000.0).max(1.0) as u64, EV_DONE, i as u32, 0);
    }

    fn batch_done(&mut self, i: usize, now: u64) {
        let timeout = (self.p.request_timeout_s * 1e6) as u64;
        let running = std::mem::take(&mut self.pods[i].running);
        for &(at, _) in &running {
            let over = (self.inputs.k8s_overhead_ms.sample(self.rng) * 1000.0) as u64;
            let waited = now - at;
            if waited > timeout {
                self.tally.record(at, timeout + over, Some("504"));
            } else {
                self.tally.record(at, waited + over, None);
            }
        }
        self.in_system -= running.len() as u64;
        let pod = &mut self.pods[i];
        pod.running = running;
        pod.running.clear();
        pod.busy = false;
        pod.busy_acc += now - pod.busy_since.max(self.last_sync);
        self.next_batch(i, now);
    }

    fn arrival(&mut self, t: u64, tok: u16) {
        if self.ready.is_empty() {
            let over = self.inputs.k8s_overhead_ms.sample(self.rng);
            self.tally.record(t, (over * 1000.0) as u64, Some("503"));
            return;
        }
        let k = match self.p.balancing {
            Balancing::RoundRobin => {
                self.rr = (self.rr + 1) % self.ready.len();
                self.rr
            }
            Balancing::Random => self.rng.random_range(0..self.ready.len()),
        };
        let i = self.ready[k];
        if self.pods[i].queue.len() as u32 >= self.p.queue_capacity {
            let over = self.inputs.k8s_overhead_ms.sample(self.rng);
            self.tally.record(t, (over * 1000.0) as u64, Some("503"));
            return;
        }
        self.pods[i].queue.push_back((t, tok));
        self.in_system += 1;
        let pod = &self.pods[i];
        // An idle worker takes it (or opens its batch window); a worker inside its
        // window starts at once when the batch is full.
        if !pod.busy && (!pod.waiting || pod.queue.len() as u32 >= self.p.max_batch) {
            self.next_batch(i, t);
        }
    }

    fn hpa_sync(&mut self, now: u64) {
        self.out.hpa_syncs += 1;
        let p = self.p;
        let window = now - self.last_sync;
        let current = self.replicas();
        let (mut used, mut sampled, mut missing) = (0.0, 0u32, 0u32);
        for pod in &mut self.pods {
            match pod.state {
                PodState::Ready if pod.ready_at <= self.last_sync && window > 0 => {
                    let mut busy = pod.busy_acc;
                    if pod.busy {
                        busy += now - pod.busy_since.max(self.last_sync);
                    }
                    used += busy as f64 / window as f64;
                    sampled += 1;
                }
                PodState::Ready | PodState::Pending | PodState::Starting => missing += 1,
                _ => {}
            }
            pod.busy_acc = 0;
        }
        self.last_sync = now;
        if p.fixed_replicas.is_some() {
            return;
        }
        // recommend(): stack/src/local/hpa.rs.
        let raw = if sampled == 0 {
            None
        } else {
            let util = used / f64::from(sampled);
            let ratio = util / p.cpu_target;
            if (ratio - 1.0).abs() <= p.tolerance {
                Some(current)
            } else if missing == 0 {
                Some((ratio * f64::from(sampled)).ceil() as u32)
            } else {
                let assumed = if ratio > 1.0 { 0.0 } else { 1.0 };
                let adjusted = (used + assumed * f64::from(missing))
                    / f64::from(sampled + missing)
                    / p.cpu_target;
                if (adjusted - 1.0).abs() <= p.tolerance || (adjusted > 1.0) != (ratio > 1.0) {
                    Some(current)
                } else {
                    Some((adjusted * f64::from(sampled + missing)).ceil() as u32)
                }
            }
        };
        let desired = match raw {
            None => current.clamp(p.min_replicas, p.max_replicas),
            Some(raw) => {
                self.recommendations.push_back((now, raw));
                let win = (p.stabilization_s * 1e6) as u64;
                while self
                    .recommendations
                    .front()
                    .is_some_and(|(t, _)| now - t > win)
                {
                    self.recommendations.pop_front();
                }
                let stabilized = if raw < current {
                    self.recommendations
                        .iter()
                        .map(|r| r.1)
                        .max()
                        .unwrap_or(raw)
                        .min(current)
                } else {
                    raw
                };
                stabilized.clamp(p.min_replicas, p.max_replicas)
            }
        };
        if desired > current {
            for _ in current..desired {
                self.new_pod(now, false);
            }
        } else if desired < current {
            // The ReplicaSet's victims: unscheduled first, then not ready, newest first.
            let mut victims: Vec<usize> = (0..self.pods.len())
                .filter(|&i| {
                    matches!(
                        self.pods[i].state,
                        PodState::Pending | PodState::Starting | PodState::Ready
                    )
                })
                .collect();
            victims.sort_by_key(|&i| {
                let rank = match self.pods[i].state {
                    PodState::Pending => 0,
                    PodState::Starting => 1,
                    _ => 2,
                };
                (rank, Reverse(i))
            });
            for &i in victims.iter().take((current - desired) as usize) {
                self.terminate(i, now);
            }
        }
    }

    fn ca_scan(&mut self, now: u64) {
        let p = self.p;
        let per_node = (p.node_cpu_m / p.pod_cpu_m.max(1)).max(1);
        let pending = self
            .pods
            .iter()
            .filter(|x| x.state == PodState::Pending)
            .count() as u32;
        let provisioning = self.nodes.iter().filter(|n| !n.ready && !n.gone).count() as u32;
        let need = pending
            .saturating_sub(provisioning * per_node)
            .div_ceil(per_node);
        let room = p.max_nodes.saturating_sub(self.live_nodes() as u32);
        for _ in 0..need.min(room) {
            self.add_node(Node {
                ready: false,
                gone: false,
                used_m: 0,
                has_image: false,
                empty_since: now,
            });
            self.out.nodes_added += 1;
            let n = self.nodes.len() - 1;
            self.push(
                now + (p.node_delay_s * 1e6) as u64,
                EV_NODE_READY,
                n as u32,
                0,
            );
        }
        // Scale down: an empty ready node, long enough, above the minimum.
        let idle = (p.node_idle_s * 1e6) as u64;
        for n in 0..self.nodes.len() {
            let ready = self.nodes.iter().filter(|n| n.ready && !n.gone).count() as u32;
            let node = &mut self.nodes[n];
            if ready > p.min_nodes
                && node.ready
                && !node.gone
                && node.used_m == 0
                && now - node.empty_since >= idle
                && pending == 0
            {
                node.gone = true;
                self.live_nodes -= 1;
            }
        }
    }

    fn schedule_pending(&mut self, now: u64) {
        for i in 0..self.pods.len() {
            if self.pods[i].state == PodState::Pending {
                self.place(i, now);
            }
        }
    }
}

/// `arrivals`: each arrival's time (µs) and its text's tokens; `rng`: the service
/// times' stream.
pub fn run(
    arrivals: impl Iterator<Item = super::Arrival>,
    inputs: &Inputs,
    p: &K8sParams,
    duration_us: u64,
    rng: &mut ChaCha8Rng,
    tally: &mut Tally,
) -> K8sOut {
    let mut s = Sim {
        p,
        inputs,
        rng,
        tally,
        heap: BinaryHeap::new(),
        pods: Vec::new(),
        nodes: Vec::new(),
        ready: Vec::new(),
        rr: 0,
        in_system: 0,
        batches: 0,
        batched: 0,
        last_sync: 0,
        recommendations: VecDeque::new(),
        out: K8sOut::default(),
        replicas: 0,
        live_nodes: 0,
    };
    for _ in 0..p.initial_nodes.max(p.min_nodes).min(p.max_nodes.max(1)) {
        s.add_node(Node {
            ready: true,
            gone: false,
            used_m: 0,
            has_image: true,
            empty_since: 0,
        });
    }
    let initial = p.fixed_replicas.unwrap_or(p.min_replicas).max(1);
    for _ in 0..initial {
        s.new_pod(0, true);
    }
    s.push((p.sync_s * 1e6) as u64, EV_HPA, 0, 0);
    s.push(10_000_000, EV_CA, 0, 0);
    s.push(0, EV_TICK, 0, 0);
    let mut arrivals = arrivals.peekable();
    // Sums of count × µs in integers: exact, and no float conversion per event.
    let (mut area, mut last) = (0u128, 0u64);
    let (mut node_area, mut pod_area) = (0u128, 0u128);
    loop {
        let ta = arrivals.peek().map_or(u64::MAX, |a| a.0);
        let te = s.heap.peek().map_or(u64::MAX, |r| unpack(r.0).0);
        let t = ta.min(te);
        if t == u64::MAX {
            break;
        }
        if t > last {
            area += u128::from(s.in_system) * u128::from(t - last);
            if last < duration_us {
                let dt = u128::from(t.min(duration_us) - last);
                node_area += u128::from(s.live_nodes()) * dt;
                pod_area += u128::from(s.replicas()) * dt;
            }
            last = t;
        }
        if te <= ta {
            let (_, kind, a, b) = unpack(s.heap.pop().expect("peeked").0);
            let i = a as usize;
            match kind {
                EV_DONE => s.batch_done(i, t),
                EV_WINDOW => {
                    if s.pods[i].waiting && s.pods[i].window == b {
                        s.next_batch(i, t);
                    }
                }
                EV_POD_READY => {
                    if s.pods[i].state == PodState::Starting {
                        s.pods[i].state = PodState::Ready;
                        s.pods[i].ready_at = t;
                        s.ready.push(i);
                    }
                }
                EV_NODE_READY => {
                    s.nodes[i].ready = true;
                    s.nodes[i].empty_since = t;
                    s.schedule_pending(t);
                }
                EV_HPA => {
                    s.hpa_sync(t);
                    if t < duration_us {
                        s.push(t + (p.sync_s * 1e6) as u64, EV_HPA, 0, 0);
                    }
                }
                EV_CA => {
                    s.ca_scan(t);
                    if t < duration_us {
                        s.push(t + 10_000_000, EV_CA, 0, 0);
                    }
                }
                _ => {
                    let (ready, nodes) = (s.ready.len() as u64, s.live_nodes());
                    s.tally.instances(t, ready);
                    s.tally.nodes(t, nodes);
                    if t + s.tally.bucket_us < duration_us {
                        let b = s.tally.bucket_us;
                        s.push(t + b, EV_TICK, 0, 0);
                    }
                }
            }
            let (ready, pods, nodes) = (s.ready.len() as u64, s.replicas() as u64, s.live_nodes());
            s.out.peak_ready_pods = s.out.peak_ready_pods.max(ready);
            s.out.peak_pods = s.out.peak_pods.max(pods);
            s.out.peak_nodes = s.out.peak_nodes.max(nodes);
            continue;
        }
        let (_, tok) = arrivals.next().expect("peeked");
        s.arrival(t, tok);
    }
    s.out.node_seconds = node_area as f64 / 1e6;
    s.out.pod_seconds = pod_area as f64 / 1e6;
    s.out.mean_batch = s.batched as f64 / s.batches.max(1) as f64;
    s.out.mean_in_system = if last > 0 {
        area as f64 / last as f64
    } else {
        0.0
    };
    s.out
}
