//! A real crash: a child process appends and acks as fast as it can and prints every offset the moment the
//! store confirms it; the parent `kill -9`s it mid-stream, reopens the directory and checks that everything
//! confirmed is there. This is the "durable when it returns" promise, tested the only way that means anything.
//!
//! The child is this same test binary, re-run with `CRASH_CHILD_DIR` set so that only
//! `crash_child_appends_until_killed` runs (it is ignored otherwise).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_store::{EmbeddedOptions, EmbeddedStore, Log, StoreError};

const CHILD_ENV: &str = "CRASH_CHILD_DIR";
const TOPIC: &str = "events";
const CONSUMER: &str = "worker";

fn payload(task: usize, index: usize) -> String {
    format!("task {task} record {index}")
}

#[test]
#[ignore = "helper process of kill_9_loses_no_confirmed_append_or_ack; it runs only when that test starts it"]
fn crash_child_appends_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        panic!("run only by kill_9_loses_no_confirmed_append_or_ack, which sets {CHILD_ENV}");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = EmbeddedStore::open(EmbeddedOptions::new(dir))
            .await
            .expect("child opens the store");
        println!("ready");
        let mut tasks = Vec::new();
        for task in 0..16 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for index in 0.. {
                    let text = payload(task, index);
                    let offset = store
                        .append(TOPIC, text.clone().into_bytes())
                        .await
                        .expect("append");
                    // Printed only after `append` returned: from here on the record must survive anything.
                    println!("appended {offset} {text}");
                }
            }));
        }
        let acker = {
            let store = store.clone();
            tokio::spawn(async move {
                loop {
                    let records = store
                        .consume(TOPIC, CONSUMER, 8, Duration::from_secs(3600))
                        .await
                        .expect("consume");
                    for record in records {
                        // Ack every other record, so the parent also sees unacked ones come back.
                        if record.offset % 2 == 0 {
                            store
                                .ack(TOPIC, CONSUMER, record.offset)
                                .await
                                .expect("ack");
                            println!("acked {}", record.offset);
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        for task in tasks {
            let _ = task.await;
        }
        let _ = acker.await;
    });
}

#[test]
fn kill_9_loses_no_confirmed_append_or_ack() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "crash_child_appends_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();

    let mut appended: BTreeMap<u64, String> = BTreeMap::new();
    let mut acked: Vec<u64> = Vec::new();
    let parse = |line: &str, appended: &mut BTreeMap<u64, String>, acked: &mut Vec<u64>| {
        if let Some(rest) = line.strip_prefix("appended ") {
            let (offset, text) = rest.split_once(' ').expect("offset and payload");
            appended.insert(offset.parse().expect("offset"), text.to_owned());
        } else if let Some(offset) = line.strip_prefix("acked ") {
            acked.push(offset.parse().expect("offset"));
        }
    };

    let started = Instant::now();
    let mut checked_lock = false;
    for line in lines.by_ref() {
        let line = line.expect("read child output");
        if line.ends_with("ready") && !checked_lock {
            checked_lock = true;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            match runtime.block_on(EmbeddedStore::open(EmbeddedOptions::new(dir.path()))) {
                Err(StoreError::Io(message)) => assert!(
                    message.contains("in use by another wisp process"),
                    "{message}"
                ),
                other => panic!("a second process must not open a directory in use; got {other:?}"),
            }
        }
        parse(&line, &mut appended, &mut acked);
        // Kill mid-stream: after enough confirmed writes that appends and acks are in full flight.
        if (appended.len() >= 2000 && acked.len() >= 50)
            || started.elapsed() > Duration::from_secs(60)
        {
            break;
        }
    }
    child.kill().expect("kill -9 the child");
    // Lines the child printed before it died are confirmations too; drain them from the pipe.
    for line in lines {
        match line {
            Ok(line) => parse(&line, &mut appended, &mut acked),
            Err(_) => break,
        }
    }
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed, it did not finish");
    assert!(checked_lock, "the child never reported ready");
    assert!(
        appended.len() >= 100,
        "the child confirmed only {} appends before the kill",
        appended.len()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store: Arc<EmbeddedStore> =
            EmbeddedStore::open(EmbeddedOptions::new(dir.path())).await.expect("reopen after kill -9");
        let last_offset = store.last_offset(TOPIC).await.expect("last_offset");
        let max_confirmed = *appended.keys().next_back().expect("some appends");
        assert!(last_offset >= max_confirmed, "last offset {last_offset} is below confirmed offset {max_confirmed}");
        let records = store.read(TOPIC, 1, usize::MAX).await.expect("read");
        assert_eq!(records.len() as u64, last_offset, "offsets are dense: no hole after the crash");
        for (offset, text) in &appended {
            let record = &records[(*offset - 1) as usize];
            assert_eq!(record.offset, *offset);
            assert_eq!(record.payload, text.as_bytes(), "confirmed record {offset} survived intact");
        }
        // Every confirmed ack holds: those records never come back; the unacked ones do.
        let mut redelivered = Vec::new();
        loop {
            let batch = store.consume(TOPIC, CONSUMER, 1000, Duration::from_secs(3600)).await.expect("consume");
            if batch.is_empty() {
                break;
            }
            redelivered.extend(batch.into_iter().map(|record| record.offset));
        }
        for offset in &acked {
            assert!(!redelivered.contains(offset), "confirmed ack of {offset} was lost in the crash");
        }
        let odd_unacked = redelivered.iter().filter(|offset| *offset % 2 == 1).count();
        assert_eq!(odd_unacked as u64, last_offset.div_ceil(2), "every never-acked record is delivered again");
        eprintln!(
            "crash test: {} confirmed appends and {} confirmed acks survived kill -9 (last offset {last_offset})",
            appended.len(),
            acked.len()
        );
    });
}
