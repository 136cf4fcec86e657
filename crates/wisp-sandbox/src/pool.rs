//! Pre-started launchers, so that a cold start only does what depends on the function.
//!
//! Why: on cgroup v1, moving a process into a cgroup (a write to `cgroup.procs`) waits for an RCU
//! grace period on the global threadgroup lock, about 5 ms each time unless attaches come back to
//! back, and every fork and exit of the machine waits behind it. Add the exec of the launcher and
//! the namespaces, and a sandbox built from nothing takes 15–25 ms on a 2-CPU machine, most of it
//! independent of the function.
//!
//! So a [`SandboxPool`] keeps [`SPARES`] launchers that have done step 1 of the launcher protocol
//! (see `launcher.rs`): exec'd, in fresh namespaces, Runtime API socket bound, and their future
//! function process forked and *already attached* to cgroups made for it with placeholder limits
//! ([`PLACEHOLDER_LIMITS`]). A spawn from the pool only writes the function's limits into those
//! cgroups (plain writes, no attach), gives the two processes their normal CPU priority back, and
//! sends the spec; the child builds its root and execs. A spawn that finds the pool empty does
//! both steps inline, exactly as [`crate::spawn`] does.
//!
//! Refills must not compete with the cold start they follow: they begin [`REFILL_DELAY`] after a
//! spare is taken (the cgroup attach would otherwise hold up the new sandbox's forks) and run at
//! `nice` 19 until used. When spares cannot be made (no root, a broken launcher), the pool logs why
//! once and tries again only after [`RETRY_AFTER`]; spawns then work as without a pool.
//!
//! Spares hold no loop device (`/tmp` comes with the spec) and never run function code. They go
//! away with the pool (dropping it kills them and removes their cgroups) and with the server: a
//! waiting launcher exits and kills its child as soon as the server's end of its socket closes,
//! whatever killed the server; cgroups left by a server that was killed are swept by the next one.
//!
//! Spares serve every network mode: an egress sandbox's preparation is the same as an isolated
//! one's, and its slirp4netns is attached at launch (`network.rs`), about 3 ms on top.
//!
//! This module must never hand out a spare whose launcher has died, nor one prepared with
//! settings other than the spec's.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::cgroup::Limits;
use crate::spawn::{Prepared, limits_of, prepare, validate, within_launch_timeout};
use crate::{LauncherCommand, SandboxError, SandboxSpec, SpawnedSandbox};

/// Launchers kept ready by default.
pub const SPARES: usize = 2;
/// Time between taking a spare and starting to make its replacement.
pub const REFILL_DELAY: Duration = Duration::from_millis(100);
/// After a failure to make a spare, how long the pool waits before trying again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// The limits of a spare's cgroups until a function takes it: enough for the waiting process, far
/// below any function's.
pub const PLACEHOLDER_LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    pids_max: 16,
};

/// A few launchers prepared ahead of need. Dropping the pool kills the spares.
pub struct SandboxPool {
    inner: Arc<Inner>,
}

struct Inner {
    launcher: LauncherCommand,
    spares: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ready: Vec<Prepared>,
    /// Spares being made (or waiting for their delay).
    filling: usize,
    closed: bool,
    retry_at: Option<Instant>,
    warned: bool,
    runtime: Option<tokio::runtime::Handle>,
    counter: u64,
}

impl SandboxPool {
    /// A pool of `spares` launchers started with `launcher`. Inside a tokio runtime it starts
    /// filling at once (on that runtime); otherwise on the first spawn.
    pub fn new(launcher: LauncherCommand, spares: usize) -> SandboxPool {
        let pool = SandboxPool {
            inner: Arc::new(Inner {
                launcher,
                spares,
                state: Mutex::new(State {
                    runtime: tokio::runtime::Handle::try_current().ok(),
                    ..State::default()
                }),
            }),
        };
        pool.refill(Duration::ZERO);
        pool
    }

    /// The launcher command the pool starts.
    pub fn launcher(&self) -> &LauncherCommand {
        &self.inner.launcher
    }

    /// Starts one sandbox, from a spare launcher when one is ready. Behaves as [`crate::spawn`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future kills the launcher (spare or not); the cgroups are removed.
    pub async fn spawn(&self, spec: &SandboxSpec) -> Result<SpawnedSandbox, SandboxError> {
        validate(spec)?;
        let limits = limits_of(spec);
        {
            let mut state = self.inner.lock();
            if state.runtime.is_none() {
                state.runtime = tokio::runtime::Handle::try_current().ok();
            }
        }
        let spare = self.take();
        self.refill(REFILL_DELAY);
        within_launch_timeout(async {
            let prepared = match spare {
                Some(mut prepared) => {
                    prepared.set_limits(limits)?;
                    prepared.normal_priority();
                    prepared
                }
                None => prepare(&self.inner.launcher, &spec.instance_id, limits, false).await?,
            };
            prepared.launch(spec).await
        })
        .await
    }

    /// Spares ready now.
    pub fn ready(&self) -> usize {
        self.inner.lock().ready.len()
    }

    /// Host pids of the ready spares' processes (launchers and their waiting children).
    pub fn spare_pids(&self) -> Vec<u32> {
        let state = self.inner.lock();
        state
            .ready
            .iter()
            .flat_map(|prepared| prepared.launcher_pid().into_iter().chain([prepared.pid()]))
            .collect()
    }

    /// Waits until the pool has its spares, or `limit` has passed; returns how many are ready.
    pub async fn fill(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        self.refill(Duration::ZERO);
        loop {
            let ready = self.ready();
            if ready >= self.inner.spares || Instant::now() >= deadline {
                return ready;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A live spare, if one is ready.
    fn take(&self) -> Option<Prepared> {
        let mut state = self.inner.lock();
        while let Some(mut prepared) = state.ready.pop() {
            if prepared.is_alive() {
                return Some(prepared);
            }
        }
        None
    }

    /// Starts making the missing spares after `delay`, unless that is under way.
    fn refill(&self, delay: Duration) {
        let mut state = self.inner.lock();
        let Some(runtime) = state.runtime.clone() else {
            return;
        };
        if state.closed
            || state.retry_at.is_some_and(|at| Instant::now() < at)
            || state.ready.len() + state.filling >= self.inner.spares
        {
            return;
        }
        let missing = self.inner.spares - state.ready.len() - state.filling;
        state.filling += missing;
        drop(state);
        let inner = Arc::downgrade(&self.inner);
        runtime.spawn(fill(inner, missing, delay));
    }
}

impl Drop for SandboxPool {
    fn drop(&mut self) {
        let spares = {
            let mut state = self.inner.lock();
            state.closed = true;
            std::mem::take(&mut state.ready)
        };
        // Each dropped spare kills its launcher and removes its cgroups once its processes are gone.
        drop(spares);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Makes `count` spares one after the other, `delay` after being asked.
async fn fill(inner: Weak<Inner>, count: usize, delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    for made in 0..count {
        let Some(pool) = inner.upgrade() else { return };
        let (launcher, name) = {
            let mut state = pool.lock();
            if state.closed {
                return;
            }
            state.counter += 1;
            (pool.launcher.clone(), format!("spare-{}", state.counter))
        };
        drop(pool);
        let result = prepare(&launcher, &name, PLACEHOLDER_LIMITS, true).await;
        let Some(pool) = inner.upgrade() else { return };
        let mut state = pool.lock();
        state.filling -= 1;
        match result {
            Ok(prepared) if !state.closed => state.ready.push(prepared),
            Ok(_closed) => {}
            Err(error) => {
                state.retry_at = Some(Instant::now() + RETRY_AFTER);
                state.filling -= count - made - 1;
                if !state.warned {
                    state.warned = true;
                    tracing::warn!(
                        %error,
                        "could not prepare spare sandbox launchers: cold starts build every sandbox from the start"
                    );
                }
                return;
            }
        }
    }
}
