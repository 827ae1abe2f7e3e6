//! Microbenchmarks of the votes (criterion): `cargo bench -p voter`.
//!
//! - `stream_vote/N=3/<chunk>`: three lanes push the same chunk, the voter releases it, the
//!   caller takes it. Throughput is counted in *released* bytes (what the client gets), so each
//!   byte was pushed three times and compared; the figure is what one session's vote can carry.
//! - `common_prefix/<len>`: the byte comparison the stream vote is made of, on equal inputs.
//! - `frame_vote/N=3`: one request submitted, three equal response digests, one decision taken;
//!   throughput is in requests.
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use voter::fault::digest;
use voter::prefix::common_prefix;
use voter::{FrameConfig, FrameVoter, StreamConfig, StreamVoter, Vote};

const CHUNKS: [(usize, &str); 4] = [(64, "64B"), (4096, "4KiB"), (64 * 1024, "64KiB"), (1 << 20, "1MiB")];

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3]).collect()
}

fn stream_vote(c: &mut Criterion) {
    let mut group = c.benchmark_group("stream_vote/N=3");
    for (len, name) in CHUNKS {
        let chunk = Bytes::from(data(len));
        let mut config = StreamConfig::majority(3);
        config.max_unreleased = 4 << 20;
        config.max_lag_bytes = 4 << 20;
        let mut voter = StreamVoter::new(config).expect("valid config");
        let mut now = Duration::ZERO;
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                now += Duration::from_nanos(1);
                for lane in 0..3 {
                    voter.push(lane, &chunk, now);
                }
                let mut released = 0;
                while let Some(out) = voter.take_released() {
                    released += out.len();
                }
                assert_eq!(released, len);
                black_box(released)
            })
        });
    }
    group.finish();
}

fn prefix(c: &mut Criterion) {
    let mut group = c.benchmark_group("common_prefix");
    for (len, name) in CHUNKS {
        let a = data(len);
        let b = a.clone();
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |bench| {
            bench.iter(|| black_box(common_prefix(black_box(&a), black_box(&b))))
        });
    }
    group.finish();
}

fn frame_vote(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_vote");
    let config = FrameConfig { replicas: 3, quorum: 2, lag_timeout: Duration::from_secs(2) };
    let mut voter = FrameVoter::new(config).expect("valid config");
    (0..3).for_each(|r| voter.join_at(r, 0, Duration::ZERO));
    let answer = Vote::Frame(digest(b"$5\r\nhello\r\n"));
    let mut now = Duration::ZERO;
    group.throughput(Throughput::Elements(1));
    group.bench_function("N=3", |b| {
        b.iter(|| {
            now += Duration::from_nanos(1);
            voter.submit(now);
            for r in 0..3 {
                voter.response(r, answer, now);
            }
            black_box(voter.take_decision())
        })
    });
    group.finish();
}

criterion_group!(benches, stream_vote, prefix, frame_vote);
criterion_main!(benches);
