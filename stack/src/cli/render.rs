//! Rendering the engine's events: live spinners on a terminal, one line per change of
//! state otherwise (CI, logs, tests) with a line at least every [`HEARTBEAT`] while
//! something runs, or JSON lines (`--json`).

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use stack::engine::events::{Event, Events, Op};
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a running operation goes without a line in CI mode: CI systems kill
/// jobs that are silent for a few minutes, and EKS takes ten.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// How to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Spinners (stderr is a terminal).
    Terminal,
    /// Plain lines on stderr.
    Lines,
    /// One JSON object a line on stdout.
    Json,
}

impl Style {
    /// JSON when asked for, spinners on a terminal, lines otherwise.
    pub fn pick(json: bool) -> Style {
        if json {
            Style::Json
        } else if std::io::stderr().is_terminal() {
            Style::Terminal
        } else {
            Style::Lines
        }
    }
}

/// `4m30s`, `12s`, `1h02m`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

struct Running {
    kind: String,
    op: Op,
    started: Instant,
    status: Option<String>,
    last_line: Instant,
}

/// The line (and JSON-line) renderer, a pure state machine over events and clock
/// ticks so that its output is testable.
pub struct Lines {
    json: bool,
    quiet: bool,
    heartbeat: Duration,
    running: BTreeMap<String, Running>,
}

impl Lines {
    /// Plain lines (`json` false) or JSON lines; `quiet` keeps only failures,
    /// interrupts and notes (JSON lines are never filtered).
    pub fn new(json: bool, quiet: bool, heartbeat: Duration) -> Lines {
        Lines {
            json,
            quiet,
            heartbeat,
            running: BTreeMap::new(),
        }
    }

    fn out(&self, e: &Event) -> Vec<String> {
        vec![serde_json::to_string(e).unwrap_or_default()]
    }

    /// The lines for one event received at `now`.
    pub fn event(&mut self, e: &Event, now: Instant) -> Vec<String> {
        match e {
            Event::Started { resource, kind, op } => {
                self.running.insert(
                    resource.clone(),
                    Running {
                        kind: kind.clone(),
                        op: *op,
                        started: now,
                        status: None,
                        last_line: now,
                    },
                );
            }
            Event::Waiting {
                resource, status, ..
            } => {
                if let Some(r) = self.running.get_mut(resource) {
                    if r.status.as_ref() == Some(status) {
                        return vec![];
                    }
                    r.status = Some(status.clone());
                    r.last_line = now;
                }
            }
            Event::Done { resource, .. } | Event::Failed { resource, .. } => {
                self.running.remove(resource);
            }
            Event::Planned { .. } | Event::Interrupted { .. } | Event::Note { .. } => {}
        }
        if self.json {
            return self.out(e);
        }
        let line = match e {
            // The plan itself is printed by the command (stdout), not as progress.
            Event::Planned { .. } => return vec![],
            Event::Started { .. } | Event::Waiting { .. } | Event::Done { .. } if self.quiet => {
                return vec![];
            }
            Event::Started { resource, kind, op } => {
                format!("  {} {kind} `{resource}`…", op.doing())
            }
            Event::Waiting {
                resource,
                status,
                elapsed,
                ..
            } => format!("  waiting for {resource}: {status} ({})", human(*elapsed)),
            Event::Done {
                resource,
                kind,
                op,
                elapsed,
                stand_in,
            } => format!(
                "  {}",
                done_line(resource, kind, *op, *elapsed, stand_in.as_deref())
            ),
            Event::Failed {
                resource,
                kind,
                error,
                ..
            } => format!("  ✗ {kind} `{resource}`: {error}"),
            Event::Interrupted { running } => format!(
                "interrupted: waiting for {running} running operation(s) to finish and saving state"
            ),
            Event::Note { message } => format!("note: {message}"),
        };
        vec![line]
    }

    /// The heartbeat lines due at `now`: one for every operation that has been
    /// silent for the heartbeat period.
    pub fn tick(&mut self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, r) in &mut self.running {
            if now.duration_since(r.last_line) < self.heartbeat {
                continue;
            }
            r.last_line = now;
            let elapsed = now.duration_since(r.started);
            let status = r.status.clone().unwrap_or_else(|| r.op.doing().to_string());
            if self.json {
                let e = Event::Waiting {
                    resource: name.clone(),
                    kind: r.kind.clone(),
                    op: r.op,
                    elapsed,
                    status,
                };
                lines.push(serde_json::to_string(&e).unwrap_or_default());
            } else if !self.quiet {
                lines.push(format!(
                    "  waiting for {name}: {status} ({})",
                    human(elapsed)
                ));
            }
        }
        lines
    }
}

/// Spinners with elapsed time, one per running operation.
struct Spinners {
    multi: MultiProgress,
    quiet: bool,
    bars: BTreeMap<String, ProgressBar>,
}

impl Spinners {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Planned { .. } => {}
            Event::Started { .. } | Event::Waiting { .. } | Event::Done { .. } if self.quiet => {}
            Event::Started { resource, kind, op } => {
                let pb = self.multi.add(ProgressBar::new_spinner());
                if let Ok(style) = ProgressStyle::with_template("  {spinner} {msg} ({elapsed})") {
                    pb.set_style(style);
                }
                pb.set_message(format!("{} {kind} `{resource}`", op.doing()));
                pb.enable_steady_tick(Duration::from_millis(120));
                self.bars.insert(resource.clone(), pb);
            }
            Event::Waiting {
                resource,
                kind,
                op,
                status,
                ..
            } => {
                if let Some(pb) = self.bars.get(resource) {
                    pb.set_message(format!("{} {kind} `{resource}`: {status}", op.doing()));
                }
            }
            Event::Done {
                resource,
                kind,
                op,
                elapsed,
                stand_in,
            } => {
                let line = done_line(resource, kind, *op, *elapsed, stand_in.as_deref());
                match self.bars.remove(resource) {
                    Some(pb) => pb.finish_with_message(line),
                    None => self.println(&format!("  {line}")),
                }
            }
            Event::Failed {
                resource,
                kind,
                error,
                ..
            } => {
                let line = format!("✗ {kind} `{resource}`: {error}");
                match self.bars.remove(resource) {
                    Some(pb) => pb.finish_with_message(line),
                    None => self.println(&format!("  {line}")),
                }
            }
            Event::Interrupted { running } => self.println(&format!(
                "interrupted: waiting for {running} running operation(s) to finish and saving state"
            )),
            Event::Note { message } => self.println(&format!("note: {message}")),
        }
    }

    fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}

enum Inner {
    Spinners(Spinners),
    Lines(Lines),
}

fn write_lines(json: bool, lines: &[String]) {
    if lines.is_empty() {
        return;
    }
    if json {
        let mut out = std::io::stdout().lock();
        for l in lines {
            let _ = writeln!(out, "{l}");
        }
        let _ = out.flush();
    } else {
        let mut err = std::io::stderr().lock();
        for l in lines {
            let _ = writeln!(err, "{l}");
        }
    }
}

/// Renders events for the duration of one command. The ticker that writes heartbeat
/// lines stops when the reporter is dropped.
pub struct Reporter {
    events: Events,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Reporter {
    /// Starts rendering in `style`. Must be called inside the tokio runtime.
    pub fn start(style: Style, quiet: bool) -> Reporter {
        let json = style == Style::Json;
        let inner = Arc::new(Mutex::new(match style {
            Style::Terminal => Inner::Spinners(Spinners {
                multi: MultiProgress::new(),
                quiet,
                bars: BTreeMap::new(),
            }),
            Style::Lines | Style::Json => Inner::Lines(Lines::new(json, quiet, HEARTBEAT)),
        }));
        let sink = inner.clone();
        let events = Events::new(move |e| {
            let Ok(mut r) = sink.lock() else { return };
            match &mut *r {
                Inner::Spinners(s) => s.event(&e),
                Inner::Lines(l) => write_lines(json, &l.event(&e, Instant::now())),
            }
        });
        let ticker = matches!(style, Style::Lines | Style::Json).then(|| {
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(5));
                loop {
                    every.tick().await;
                    let Ok(mut r) = inner.lock() else { return };
                    if let Inner::Lines(l) = &mut *r {
                        write_lines(json, &l.tick(Instant::now()));
                    }
                }
            })
        });
        Reporter { events, ticker }
    }

    /// The sink to hand to the engine.
    pub fn events(&self) -> Events {
        self.events.clone()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
    }
}

/// The line for a finished operation: what was done, or what stands in for it.
fn done_line(
    resource: &str,
    kind: &str,
    op: Op,
    elapsed: Duration,
    stand_in: Option<&str>,
) -> String {
    match stand_in {
        Some(what) => format!("~ {kind} `{resource}`: {what}"),
        None => format!(
            "✓ {} {kind} `{resource}` ({:.1}s)",
            op.done(),
            elapsed.as_secs_f64()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn started(name: &str) -> Event {
        Event::Started {
            resource: name.into(),
            kind: "aws:eks:Cluster".into(),
            op: Op::Create,
        }
    }

    #[test]
    fn ci_lines_one_per_change_and_a_heartbeat_every_30s() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut r = Lines::new(false, false, HEARTBEAT);
        assert_eq!(
            r.event(&started("eks-cluster"), t0),
            ["  creating aws:eks:Cluster `eks-cluster`…"]
        );
        let waiting = |s: u64, status: &str| Event::Waiting {
            resource: "eks-cluster".into(),
            kind: "aws:eks:Cluster".into(),
            op: Op::Create,
            elapsed: Duration::from_secs(s),
            status: status.into(),
        };
        assert_eq!(
            r.event(&waiting(1, "CREATING"), at(1)),
            ["  waiting for eks-cluster: CREATING (1s)"]
        );
        // The same status again is no new line.
        assert!(r.event(&waiting(2, "CREATING"), at(2)).is_empty());
        // Silent for less than 30 s: nothing; then one line per 30 s.
        assert!(r.tick(at(20)).is_empty());
        assert_eq!(
            r.tick(at(31)),
            ["  waiting for eks-cluster: CREATING (31s)"]
        );
        assert!(r.tick(at(45)).is_empty());
        assert_eq!(
            r.tick(at(270)),
            ["  waiting for eks-cluster: CREATING (4m30s)"]
        );
        assert_eq!(
            r.event(
                &Event::Done {
                    resource: "eks-cluster".into(),
                    kind: "aws:eks:Cluster".into(),
                    op: Op::Create,
                    elapsed: Duration::from_millis(600_400),
                    stand_in: None,
                },
                at(600)
            ),
            ["  ✓ created aws:eks:Cluster `eks-cluster` (600.4s)"]
        );
        // Nothing runs: no heartbeat.
        assert!(r.tick(at(900)).is_empty());
    }

    #[test]
    fn a_stood_in_resource_is_not_reported_created() {
        let t0 = Instant::now();
        let mut r = Lines::new(false, false, HEARTBEAT);
        r.event(&started("eks-metrics-server"), t0);
        let lines = r.event(
            &Event::Done {
                resource: "eks-metrics-server".into(),
                kind: "aws:eks:Addon".into(),
                op: Op::Create,
                elapsed: Duration::from_millis(3),
                stand_in: Some("provided by the local control plane".into()),
            },
            t0,
        );
        assert_eq!(
            lines,
            ["  ~ aws:eks:Addon `eks-metrics-server`: provided by the local control plane"]
        );
    }

    #[test]
    fn heartbeat_without_status_names_the_operation() {
        let t0 = Instant::now();
        let mut r = Lines::new(false, false, HEARTBEAT);
        r.event(&started("vpc"), t0);
        assert_eq!(
            r.tick(t0 + Duration::from_secs(30)),
            ["  waiting for vpc: creating (30s)"]
        );
    }

    #[test]
    fn quiet_keeps_failures_and_interrupts_only() {
        let t0 = Instant::now();
        let mut r = Lines::new(false, true, HEARTBEAT);
        assert!(r.event(&started("vpc"), t0).is_empty());
        assert!(r.tick(t0 + Duration::from_secs(60)).is_empty());
        let failed = Event::Failed {
            resource: "vpc".into(),
            kind: "aws:ec2:Vpc".into(),
            op: Op::Create,
            error: "ec2:CreateVpc failed: Boom: no".into(),
        };
        assert_eq!(
            r.event(&failed, t0),
            ["  ✗ aws:ec2:Vpc `vpc`: ec2:CreateVpc failed: Boom: no"]
        );
        assert_eq!(
            r.event(&Event::Interrupted { running: 2 }, t0),
            ["interrupted: waiting for 2 running operation(s) to finish and saving state"]
        );
    }

    #[test]
    fn json_lines_parse_and_carry_the_heartbeat() {
        let t0 = Instant::now();
        let mut r = Lines::new(true, false, HEARTBEAT);
        let mut lines = r.event(&started("eks-cluster"), t0);
        lines.extend(r.tick(t0 + Duration::from_secs(30)));
        lines.extend(r.event(
            &Event::Note {
                message: "removing stale lock".into(),
            },
            t0,
        ));
        let v: Vec<Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0]["event"], "started");
        assert_eq!(v[0]["resource"], "eks-cluster");
        assert_eq!(v[0]["op"], "create");
        assert_eq!(v[1]["event"], "waiting");
        assert_eq!(v[1]["status"], "creating");
        assert_eq!(v[1]["elapsed_s"], 30.0);
        assert_eq!(v[2]["event"], "note");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(5)), "5s");
        assert_eq!(human(Duration::from_secs(270)), "4m30s");
        assert_eq!(human(Duration::from_secs(3720)), "1h02m");
    }
}
