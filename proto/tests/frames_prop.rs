//! Property tests of the frame codec: every message round-trips, bit for bit, through
//! bytes and through a stream; no input, however broken, makes decoding panic.

use std::io::Cursor;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::Union;

use proto::frame::{
    decode_frame, encode_frame, FrameError, FrameReader, FrameWriter, Limits, WireHeader,
};
use proto::msg::{JobSpec, JobState, JobStatus, LoadReport, OsBytes};
use proto::{Hello, JobId, Msg, Role, Version};

fn os_bytes() -> impl Strategy<Value = OsBytes> {
    vec(any::<u8>(), 0..40).prop_map(OsBytes)
}

fn name() -> impl Strategy<Value = String> {
    ".{0,20}"
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Cli),
        Just(Role::Placer),
        Just(Role::Shadowd),
        Just(Role::Shim)
    ]
}

fn job() -> impl Strategy<Value = JobId> {
    any::<u64>().prop_map(JobId)
}

fn load_report() -> impl Strategy<Value = LoadReport> {
    (
        name(),
        name(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(
                node,
                addr,
                cpus,
                speed,
                run_queue,
                guests,
                free_mem_mib,
                total_mem_mib,
                interval_ms,
            )| LoadReport {
                node,
                addr,
                cpus,
                speed,
                run_queue,
                guests,
                free_mem_mib,
                total_mem_mib,
                interval_ms,
                guest_list: Vec::new(),
                candidates: Vec::new(),
                away: Vec::new(),
            },
        )
}

fn job_spec() -> impl Strategy<Value = JobSpec> {
    (
        vec(os_bytes(), 0..4),
        vec((os_bytes(), os_bytes()), 0..3),
        os_bytes(),
        name(),
        any::<u64>(),
        proptest::option::of(os_bytes()),
        proptest::option::of((proptest::option::of(os_bytes()), proptest::option::of(os_bytes()), proptest::option::of(any::<u64>()))),
    )
        .prop_map(|(argv, env, cwd, home, mem_mib, restart_from, batch)| JobSpec {
            argv,
            env,
            cwd,
            home,
            mem_mib,
            restart_from,
            batch: batch.map(|(input, output, ckpt_interval_s)| proto::msg::BatchIo {
                input,
                output,
                error: None,
                ckpt_dir: None,
                ckpt_interval_s,
                home_addr: None,
                remote_home: None,
            }),
        })
}

fn job_state() -> impl Strategy<Value = JobState> {
    prop_oneof![
        Just(JobState::Queued),
        Just(JobState::Starting),
        Just(JobState::Running),
        Just(JobState::Checkpointing),
        Just(JobState::Migrating),
        Just(JobState::Vacated),
        any::<i32>().prop_map(|code| JobState::Exited { code }),
        any::<i32>().prop_map(|signal| JobState::Killed { signal }),
        name().prop_map(|reason| JobState::Failed { reason }),
    ]
}

fn job_status() -> impl Strategy<Value = JobStatus> {
    (
        job(),
        name(),
        name(),
        job_state(),
        proptest::option::of(any::<u32>()),
        proptest::option::of(name()),
    )
        .prop_map(|(job, node, home, state, pid, non_migratable)| JobStatus {
            job,
            node,
            home,
            state,
            pid,
            non_migratable,
        })
}

/// Bulk lengths are kept small so the frames with their payloads stay cheap to build.
fn small_len() -> impl Strategy<Value = u32> {
    0u32..300
}

fn msg() -> impl Strategy<Value = Msg> {
    Union::new(vec![
        (any::<u16>(), any::<u16>(), name(), role())
            .prop_map(|(major, minor, node, role)| {
                Msg::Hello(Hello {
                    version: Version { major, minor },
                    node,
                    role,
                })
            })
            .boxed(),
        any::<[u8; 32]>()
            .prop_map(|nonce| Msg::AuthChallenge { nonce })
            .boxed(),
        any::<[u8; 32]>()
            .prop_map(|mac| Msg::AuthResponse { mac })
            .boxed(),
        Just(Msg::AuthOk).boxed(),
        Just(Msg::Ack).boxed(),
        name().prop_map(|msg| Msg::Error { msg }).boxed(),
        load_report().prop_map(Msg::LoadReport).boxed(),
        Just(Msg::QueryNodes).boxed(),
        vec(load_report(), 0..3)
            .prop_map(|nodes| Msg::NodeList { nodes })
            .boxed(),
        (job(), job_spec())
            .prop_map(|(job, spec)| Msg::PlaceJob { job, spec })
            .boxed(),
        (job(), name(), proptest::option::of(name()))
            .prop_map(|(job, to, addr)| Msg::Migrate { job, to, addr })
            .boxed(),
        job().prop_map(|job| Msg::Vacate { job }).boxed(),
        (job(), any::<i32>())
            .prop_map(|(job, signal)| Msg::Kill { job, signal })
            .boxed(),
        job_status().prop_map(Msg::JobStatus).boxed(),
        (job(), name(), proptest::option::of(any::<u64>()))
            .prop_map(|(job, home, size)| Msg::ImageBegin { job, home, size })
            .boxed(),
        small_len().prop_map(|len| Msg::ImageChunk { len }).boxed(),
        any::<u64>()
            .prop_map(|checksum| Msg::ImageEnd { checksum })
            .boxed(),
        (job(), any::<u64>())
            .prop_map(|(job, size)| Msg::ImageReceived { job, size, path: OsBytes(b"/x".to_vec()) })
            .boxed(),
    ])
}

/// A message with a bulk payload of exactly the length it states.
fn msg_with_bulk() -> impl Strategy<Value = (Msg, Vec<u8>)> {
    msg().prop_flat_map(|m| {
        let n = m.bulk_len() as usize;
        (Just(m), vec(any::<u8>(), n..=n))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips_through_bytes((m, bulk) in msg_with_bulk()) {
        let limits = Limits::default();
        let wire = encode_frame(&m, &bulk, &limits).unwrap();
        let f = decode_frame::<Msg>(&wire, &limits).unwrap();
        prop_assert_eq!(&f.header, &m);
        prop_assert_eq!(f.bulk, &bulk[..]);
        prop_assert_eq!(f.consumed, wire.len());
    }

    #[test]
    fn message_sequences_round_trip_through_a_stream(frames in vec(msg_with_bulk(), 1..8)) {
        let mut wire = Vec::new();
        let mut w = FrameWriter::new(&mut wire);
        for (m, bulk) in &frames {
            w.write_msg(m, bulk).unwrap();
        }
        let mut r = FrameReader::new(Cursor::new(wire));
        for (i, (m, bulk)) in frames.iter().enumerate() {
            // Alternate the two read paths.
            if i % 2 == 0 {
                let (got, got_bulk): (Msg, Vec<u8>) = r.read_msg().unwrap();
                prop_assert_eq!(&got, m);
                prop_assert_eq!(&got_bulk, bulk);
            } else {
                let mut buf = vec![0u8; 400];
                let (got, n): (Msg, usize) = r.read_msg_into(&mut buf).unwrap();
                prop_assert_eq!(&got, m);
                prop_assert_eq!(&buf[..n], &bulk[..]);
            }
        }
        prop_assert!(matches!(r.read_msg::<Msg>(), Err(FrameError::Closed)));
    }

    #[test]
    fn garbage_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        let limits = Limits::default();
        // Errors are fine; a panic fails the test. A success must be self-consistent.
        if let Ok(f) = decode_frame::<Msg>(&bytes, &limits) {
            prop_assert!(f.consumed <= bytes.len());
            prop_assert_eq!(f.bulk.len() as u64, f.header.bulk_len());
        }
        let mut r = FrameReader::new(Cursor::new(&bytes[..]));
        for _ in 0..4 {
            if r.read_msg::<Msg>().is_err() {
                break;
            }
        }
    }

    #[test]
    fn garbage_behind_a_plausible_length_never_panics(body in vec(any::<u8>(), 0..300), extra in 0usize..8) {
        // A sane length prefix followed by garbage reaches the postcard decoder every time.
        let mut bytes = (body.len() as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(&body);
        bytes.extend(std::iter::repeat_n(0u8, extra));
        let _ = decode_frame::<Msg>(&bytes, &Limits::default());
        let _ = FrameReader::new(Cursor::new(&bytes[..])).read_msg::<Msg>();
    }

    #[test]
    fn corrupted_frames_never_panic((m, bulk) in msg_with_bulk(), flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let limits = Limits::default();
        let mut wire = encode_frame(&m, &bulk, &limits).unwrap();
        for (at, x) in flips {
            let i = at.index(wire.len());
            wire[i] ^= x;
        }
        if let Ok(f) = decode_frame::<Msg>(&wire, &limits) {
            prop_assert_eq!(f.bulk.len() as u64, f.header.bulk_len());
        }
        let mut buf = [0u8; 64];
        let _ = FrameReader::new(Cursor::new(&wire[..])).read_msg_into::<Msg>(&mut buf);
    }

    #[test]
    fn every_truncation_is_an_error((m, bulk) in msg_with_bulk(), cut in any::<prop::sample::Index>()) {
        let limits = Limits::default();
        let wire = encode_frame(&m, &bulk, &limits).unwrap();
        let cut = cut.index(wire.len());
        let is_incomplete = matches!(decode_frame::<Msg>(&wire[..cut], &limits), Err(FrameError::Incomplete { .. }));
        prop_assert!(is_incomplete);
        let e = FrameReader::new(Cursor::new(&wire[..cut])).read_msg::<Msg>().unwrap_err();
        let expected = if cut == 0 {
            matches!(e, FrameError::Closed)
        } else {
            matches!(e, FrameError::Truncated { .. })
        };
        prop_assert!(expected, "cut {}: {}", cut, e);
    }
}
