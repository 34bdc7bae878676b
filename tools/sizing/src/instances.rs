//! `--instances N`: the workload on N server processes on one broker, as a deployment runs.
//!
//! This process starts N workers (itself again, with `--worker K` and the same flags; see
//! [`worker`](crate::worker)), lets them subscribe, tells them all to publish at once, hands
//! each the others' per-topic counts so it knows when it has everything, and adds up their
//! tallies. The broker's CPU is that of the process listening on its port, with its
//! descendants, summed over every node of a Redis Cluster (one node for any other broker). Workers are killed and reaped when this process is done with them, whether
//! the run succeeded or not, and exit by themselves when it dies (their standard input closes).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fanout::Config;

use crate::args::Args;
use crate::cpu::{process_name, server_processes, ServerCpu};
use crate::instance::{broker_nodes, broker_server};
use crate::report::{
    BrokerCpu, BrokerFigures, BrokerNode, BrokerProcess, InstanceFigures, InstancesSection, Report,
};
use crate::run::{policy_name, scenario};
use crate::tally::Tally;
use crate::worker::{ParentMessage, WorkerMessage};

/// Runs `args` on `instances` worker processes and reports their sum.
pub fn run(args: &Args, config: &Config, instances: usize) -> Result<Report, Box<dyn std::error::Error>> {
    let (server, address) = broker_server(args)?;
    let nodes = address.map_or_else(Vec::new, |address| broker_nodes(args, address));
    let mut workers = Workers::start(instances)?;
    workers.gather("ready", Duration::from_secs(120), |message| {
        matches!(message, WorkerMessage::Ready).then_some(())
    })?;

    let broker_before = ServerCpu::listening(&nodes);
    let started = Instant::now();
    workers.tell(&ParentMessage::Go)?;
    let published = workers.gather(
        "its broadcasts",
        Duration::from_secs_f64(args.duration) + Duration::from_secs(120),
        |message| match message {
            WorkerMessage::Published(per_topic) => Some(per_topic),
            _ => None,
        },
    )?;
    let mut totals = vec![0u64; args.topics];
    for per_topic in &published {
        for (total, count) in totals.iter_mut().zip(per_topic) {
            *total += count;
        }
    }
    workers.tell(&ParentMessage::Totals(totals))?;
    let done = workers.gather("its tally", Duration::from_secs(120), |message| match message {
        WorkerMessage::Done { tally, broker } => Some((*tally, broker)),
        _ => None,
    })?;
    let wall_seconds = started.elapsed().as_secs_f64();
    let broker_after = ServerCpu::listening(&nodes);
    let pids = workers.finish();

    let broker_cpu = broker_before.seconds_until(&broker_after);
    let broker = BrokerCpu {
        server,
        nodes: nodes
            .iter()
            .map(|node| BrokerNode {
                address: node.to_string(),
                processes: server_processes(*node)
                    .into_iter()
                    .map(|pid| BrokerProcess {
                        pid,
                        name: process_name(pid).unwrap_or_default(),
                    })
                    .collect(),
            })
            .collect(),
        cpu_seconds: broker_cpu,
        cores_busy: broker_cpu.map(|seconds| seconds / wall_seconds),
    };
    let (tallies, brokers): (Vec<Tally>, Vec<BrokerFigures>) = done.into_iter().unzip();
    let figures = tallies
        .iter()
        .zip(brokers)
        .zip(pids)
        .enumerate()
        .map(|(instance, ((tally, broker), pid))| figures(instance, pid, tally, broker))
        .collect();
    let tally = Tally::merge(tallies).ok_or("no instances")?;
    let scenario = scenario(args, config.capacity, policy_name(config), tally.subscriptions);
    let mut report = Report::new(args.provider.name(), scenario, tally);
    report.instances = Some(InstancesSection {
        per_instance: figures,
        broker,
        wall_seconds,
    });
    Ok(report)
}

fn figures(instance: usize, pid: u32, tally: &Tally, broker: BrokerFigures) -> InstanceFigures {
    InstanceFigures {
        instance,
        pid,
        sessions: tally.sessions,
        published: tally.published,
        delivered: tally.delivered,
        cross_instance_delivered: tally.cross_instance_delivered,
        broker,
        dropped: tally.dropped.clone(),
        cpu_seconds: tally.cpu_seconds,
        cores_busy: tally.cpu_seconds / tally.elapsed_seconds,
        elapsed_seconds: tally.elapsed_seconds,
    }
}

/// The worker processes, killed and reaped on drop.
struct Workers {
    children: Vec<Child>,
    inputs: Vec<ChildStdin>,
    /// Each worker's lines, by worker index, or why one could not be read; `None` when its
    /// output ended.
    lines: mpsc::Receiver<(usize, Option<Result<WorkerMessage, String>>)>,
}

impl Workers {
    /// Starts `instances` copies of this program with this process's flags and `--worker K`.
    fn start(instances: usize) -> Result<Workers, Box<dyn std::error::Error>> {
        let program = std::env::current_exe()?;
        let epoch_us = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros() as u64;
        let (sender, lines) = mpsc::channel();
        let mut workers = Workers {
            children: Vec::with_capacity(instances),
            inputs: Vec::with_capacity(instances),
            lines,
        };
        for index in 0..instances {
            let mut child = Command::new(&program)
                .args(std::env::args_os().skip(1))
                .args(["--worker", &index.to_string()])
                .args(["--run-id", &std::process::id().to_string()])
                .args(["--epoch-us", &epoch_us.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            let output = child.stdout.take().expect("piped");
            workers.inputs.push(child.stdin.take().expect("piped"));
            workers.children.push(child);
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines() {
                    let message = line
                        .map_err(|error| error.to_string())
                        .and_then(|line| serde_json::from_str(&line).map_err(|error| error.to_string()));
                    let failed = message.is_err();
                    if sender.send((index, Some(message))).is_err() || failed {
                        return;
                    }
                }
                let _ = sender.send((index, None));
            });
        }
        Ok(workers)
    }

    /// Sends `message` to every worker.
    fn tell(&mut self, message: &ParentMessage) -> Result<(), Box<dyn std::error::Error>> {
        let line = serde_json::to_string(message)?;
        for (index, input) in self.inputs.iter_mut().enumerate() {
            writeln!(input, "{line}")
                .and_then(|()| input.flush())
                .map_err(|error| format!("instance {index} stopped listening: {error}"))?;
        }
        Ok(())
    }

    /// One message from every worker that `pick` accepts, in worker order; an error when a
    /// worker sends something else, ends, or `within` passes first.
    fn gather<T>(
        &mut self,
        what: &str,
        within: Duration,
        pick: impl Fn(WorkerMessage) -> Option<T>,
    ) -> Result<Vec<T>, Box<dyn std::error::Error>> {
        let deadline = Instant::now() + within;
        let mut gathered: Vec<Option<T>> = (0..self.children.len()).map(|_| None).collect();
        while gathered.iter().any(Option::is_none) {
            let wait = deadline.saturating_duration_since(Instant::now());
            let (index, message) = self
                .lines
                .recv_timeout(wait)
                .map_err(|_| format!("an instance did not send {what} within {within:?}"))?;
            let Some(message) = message else {
                if gathered[index].is_some() {
                    // Its last line was what we wanted: its exit is the next step.
                    continue;
                }
                let status = self.children[index].wait()?;
                return Err(format!("instance {index} ended ({status}) before sending {what}").into());
            };
            let message = message.map_err(|error| format!("instance {index} sent a bad line: {error}"))?;
            let picked =
                pick(message).ok_or_else(|| format!("instance {index} sent something other than {what}"))?;
            gathered[index] = Some(picked);
        }
        Ok(gathered.into_iter().flatten().collect())
    }

    /// Tells the workers to stop and closes their input, which ends them, waits up to 10 s for
    /// each to exit, and returns their process ids; drop kills any still running.
    fn finish(&mut self) -> Vec<u32> {
        // One that cannot be told has ended already.
        let _ = self.tell(&ParentMessage::Stop);
        self.inputs.clear();
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in &mut self.children {
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.children.iter().map(Child::id).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.inputs.clear();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
