//! A worker's runtimes between the wire and the registry: heartbeats and liveness in,
//! profiles and checkouts both ways (the registry keeps domain values; `mc profiles`,
//! `mc workers` and `mc projects` get them back as proto).

use mc_proto as pb;

use super::ms_duration;
use crate::domain::runtime::{Beat, Billing, HostCheckout, Liveness, RuntimeProfile};
use mc_common::Timestamp;

fn duration_from_pb(d: &Option<mc_proto::prost_types::Duration>) -> Option<std::time::Duration> {
    d.as_ref().map(|d| {
        std::time::Duration::from_secs(u64::try_from(d.seconds).unwrap_or(0))
            + std::time::Duration::from_nanos(u64::try_from(d.nanos).unwrap_or(0))
    })
}

fn duration_to_pb(d: Option<std::time::Duration>) -> Option<mc_proto::prost_types::Duration> {
    d.and_then(|d| ms_duration(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
}

pub fn liveness_from_pb(r: &pb::RuntimeLiveness) -> Liveness {
    Liveness {
        attempt_id: r.attempt_id,
        epoch: r.epoch,
        alive: r.alive,
        last_output_at: r.last_output_at.as_ref().map(Timestamp::from_proto),
        output_fingerprint: r.output_fingerprint,
        output_seq: r.output_seq,
    }
}

pub fn liveness_to_pb(l: &Liveness) -> pb::RuntimeLiveness {
    pb::RuntimeLiveness {
        attempt_id: l.attempt_id,
        epoch: l.epoch,
        alive: l.alive,
        last_output_at: l.last_output_at.map(Timestamp::to_proto),
        output_fingerprint: l.output_fingerprint,
        output_seq: l.output_seq,
    }
}

pub fn beat_from_pb(hb: &pb::Heartbeat) -> Beat {
    Beat {
        free_slots: hb.free_slots,
        runtimes: hb.runtimes.iter().map(liveness_from_pb).collect(),
        draining: hb.draining,
    }
}

pub fn profile_from_pb(p: &pb::RuntimeProfile) -> RuntimeProfile {
    RuntimeProfile {
        name: p.name.clone(),
        interactive: p.interactive,
        billing: match pb::Billing::try_from(p.billing) {
            Ok(pb::Billing::Subscription) => Billing::Subscription,
            Ok(pb::Billing::Api) => Billing::Api,
            Ok(pb::Billing::None) => Billing::None,
            _ => Billing::Unspecified,
        },
        command: p.command.clone(),
        soft_timeout: duration_from_pb(&p.soft_timeout),
        grace: duration_from_pb(&p.grace),
        runtime: p.runtime.clone(),
        hosts: p.hosts.clone(),
    }
}

pub fn profile_to_pb(p: &RuntimeProfile) -> pb::RuntimeProfile {
    pb::RuntimeProfile {
        name: p.name.clone(),
        interactive: p.interactive,
        billing: match p.billing {
            Billing::Unspecified => pb::Billing::Unspecified,
            Billing::Subscription => pb::Billing::Subscription,
            Billing::Api => pb::Billing::Api,
            Billing::None => pb::Billing::None,
        } as i32,
        command: p.command.clone(),
        soft_timeout: duration_to_pb(p.soft_timeout),
        grace: duration_to_pb(p.grace),
        runtime: p.runtime.clone(),
        hosts: p.hosts.clone(),
    }
}

pub fn checkout_from_pb(c: &pb::Checkout) -> HostCheckout {
    HostCheckout {
        project: c.project.clone(),
        path: c.path.clone(),
        host: c.host.clone(),
    }
}

pub fn checkout_to_pb(c: &HostCheckout) -> pb::Checkout {
    pb::Checkout {
        project: c.project.clone(),
        path: c.path.clone(),
        host: c.host.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_values_survive_the_round_trip() {
        let p = pb::RuntimeProfile {
            name: "claude-tui".into(),
            interactive: true,
            billing: pb::Billing::Subscription as i32,
            command: "claude".into(),
            soft_timeout: Some(mc_proto::prost_types::Duration {
                seconds: 90,
                nanos: 0,
            }),
            grace: Some(mc_proto::prost_types::Duration {
                seconds: 0,
                nanos: 500_000_000,
            }),
            runtime: "tmux".into(),
            hosts: vec!["h1".into()],
        };
        assert_eq!(profile_to_pb(&profile_from_pb(&p)), p);
        let l = pb::RuntimeLiveness {
            attempt_id: 3,
            epoch: 2,
            alive: true,
            last_output_at: Some(Timestamp(1_700_000_000_123).to_proto()),
            output_fingerprint: u64::MAX,
            output_seq: 9,
        };
        assert_eq!(liveness_to_pb(&liveness_from_pb(&l)), l);
        let c = pb::Checkout {
            project: "web".into(),
            path: "/src/web".into(),
            host: "h1".into(),
        };
        assert_eq!(checkout_to_pb(&checkout_from_pb(&c)), c);
        // A billing this side does not know reads as unspecified, not as a panic.
        let odd = pb::RuntimeProfile { billing: 99, ..p };
        assert_eq!(profile_from_pb(&odd).billing, Billing::Unspecified);
        // A negative duration from the wire is no duration, not a wrap-around.
        let neg = pb::RuntimeProfile {
            soft_timeout: Some(mc_proto::prost_types::Duration {
                seconds: -5,
                nanos: -1,
            }),
            ..Default::default()
        };
        assert_eq!(
            profile_from_pb(&neg).soft_timeout,
            Some(std::time::Duration::ZERO)
        );
    }
}
