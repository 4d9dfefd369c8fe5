//! Runs the tour (`examples/tour.rs`) so that it cannot rot: every section must show what it
//! claims, with no service but the loopback fake API it starts.

#[path = "../examples/tour.rs"]
#[allow(dead_code, unreachable_pub)] // `main` and the command line are the example's own.
mod tour;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_shows_every_layer_at_work() {
    let metrics = tour::install_metrics().unwrap();
    let report = tour::run(tour::Options { raw_metrics: true }, &metrics)
        .await
        .unwrap();
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.succeeded, 200, "{report:?}");
    assert!(report.attempt_timeouts, "{report:?}");
    assert!(report.deadline_fired, "{report:?}");
    assert!(report.breaker_opened, "{report:?}");
    assert!(report.breaker_recovered, "{report:?}");
    assert_eq!(report.cache_hits, 2, "{report:?}");
    assert!(report.cache_revalidated, "{report:?}");
    assert!(report.cache_stale_served, "{report:?}");
}
