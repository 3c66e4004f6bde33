use ebpf::{CpuSampler, CpuSamplerConfig};
use profile::Symbolizer;

use crate::support::{Build, HOT_FUNCTION, Workload, ebpf_ready, sample_until_exit, workload};

#[test]
fn a_boosted_process_gets_more_samples_than_its_peer() {
    if !ebpf_ready("a_boosted_process_gets_more_samples_than_its_peer") {
        return;
    }
    let config = CpuSamplerConfig::default();
    let mut sampler = CpuSampler::start(config.clone()).expect("start sampler");
    let mut symbolizer = Symbolizer::new();
    let binary = workload(Build::FramePointers);
    let mut boosted = Workload::spawn(&binary, &["burn", "4"]);
    let mut peer = Workload::spawn(&binary, &["burn", "4"]);
    sampler.boost(boosted.pid()).expect("boost");
    assert_eq!(sampler.boosted().collect::<Vec<_>>(), vec![boosted.pid()]);
    let samples = sample_until_exit(
        &mut sampler,
        &mut symbolizer,
        &mut [&mut boosted, &mut peer],
    );
    let of = |pid: u32| samples.iter().filter(move |s| s.sample.pid == pid);
    let (boosted_n, peer_n) = (of(boosted.pid()).count(), of(peer.pid()).count());
    let cpu_ms = |pid: u32| of(pid).map(|s| s.sample.period_ns).sum::<u64>() as f64 / 1e6;
    let counters = sampler.counters().expect("counters");
    eprintln!(
        "boosted pid: {boosted_n} samples ({:.0} ms CPU), peer: {peer_n} samples ({:.0} ms CPU), boosted skipped at base rate: {}",
        cpu_ms(boosted.pid()),
        cpu_ms(peer.pid()),
        counters.kernel.boosted_skipped
    );
    assert!(peer_n >= 10, "peer has only {peer_n} samples");
    // 99 Hz against 19 Hz is 5.2x; both burn the same.
    assert!(
        boosted_n >= 3 * peer_n,
        "boosted {boosted_n} samples, peer {peer_n}"
    );
    let boost_period = 1_000_000_000 / u64::from(config.boost_frequency_hz);
    for s in of(boosted.pid()) {
        assert!(s.sample.boosted);
        assert_eq!(s.sample.period_ns, boost_period);
    }
    // A few samples land in clock_gettime between rounds.
    let hot = of(boosted.pid())
        .filter(|s| s.leaf_is(HOT_FUNCTION))
        .count();
    assert!(
        hot * 10 >= boosted_n * 9,
        "{hot} of {boosted_n} in {HOT_FUNCTION}"
    );
    assert!(of(peer.pid()).all(|s| !s.sample.boosted));
    // Weighted by period, both used about the same CPU time.
    let ratio = cpu_ms(boosted.pid()) / cpu_ms(peer.pid());
    assert!((0.5..2.0).contains(&ratio), "CPU time ratio {ratio}");
    assert!(counters.kernel.boosted_skipped > 0);

    sampler.unboost(boosted.pid()).expect("unboost");
    assert_eq!(sampler.boosted().count(), 0);
}
