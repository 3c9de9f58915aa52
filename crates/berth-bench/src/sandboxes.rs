//! Sandbox cold start per tier: from `Backend::create` (which returns once the guest answers)
//! to the first command's exit, and teardown. Uses the real guest of a `berth` binary.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_sandbox::gvisor::{GvisorBackend, GvisorSettings};
use berth_sandbox::namespace::{NamespaceBackend, NamespaceSettings};
use berth_sandbox::{Backend, Egress, ExecSpec, Limits, SandboxSpec};

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1000.0
}

async fn measure(backend: &dyn Backend, runs: usize) -> anyhow::Result<[Vec<Duration>; 3]> {
    let (mut ready, mut first_command, mut teardown) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let spec = SandboxSpec {
            label: "bench".into(),
            mounts: vec![],
            limits: Limits::default(),
            egress: Egress::Denied,
            forwards: vec![],
            root: None,
        };
        let started = Instant::now();
        let sandbox = backend.create(spec).await?;
        ready.push(started.elapsed());
        let exec = ExecSpec {
            argv: vec!["true".into()],
            ..ExecSpec::default()
        };
        sandbox.guest().exec_collect(exec, 1024).await?;
        first_command.push(started.elapsed());
        let destroying = Instant::now();
        sandbox.destroy().await;
        teardown.push(destroying.elapsed());
    }
    for list in [&mut ready, &mut first_command, &mut teardown] {
        list.sort();
    }
    Ok([ready, first_command, teardown])
}

/// Prints one Markdown row per available tier.
pub async fn run(berth: &Path, runs: usize) -> anyhow::Result<()> {
    let guest = vec![berth.as_os_str().to_os_string(), "__guest".into()];
    let dir = tempfile::tempdir()?;
    let mut backends: Vec<(&str, Box<dyn Backend>)> = vec![(
        "namespace",
        Box::new(NamespaceBackend::new(NamespaceSettings::new(
            guest.clone(),
            dir.path().join("ns"),
        ))?),
    )];
    if let Some(runsc) = berth_sandbox::probe::runsc() {
        let settings = GvisorSettings::new(guest, dir.path().join("gvisor"), runsc);
        backends.push(("gvisor", Box::new(GvisorBackend::new(settings)?)));
    }
    println!("| tier | runs | guest ready p50 ms | p95 ms | first command done p50 ms | p95 ms | teardown p50 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, backend) in backends {
        let [ready, command, teardown] = measure(backend.as_ref(), runs).await?;
        println!(
            "| {name} | {runs} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
            percentile(&ready, 0.5),
            percentile(&ready, 0.95),
            percentile(&command, 0.5),
            percentile(&command, 0.95),
            percentile(&teardown, 0.5)
        );
    }
    Ok(())
}
