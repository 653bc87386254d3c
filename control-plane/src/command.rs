//! What the replicated log holds: the commands that change the registry, their replies, and
//! the image a snapshot carries.
//!
//! This is the whole vocabulary between the registry (which applies commands) and the store
//! (which keeps the Raft log and the state machine's snapshots): the store knows these types
//! and [`Machine`], never the registry itself.
//!
//! A command is applied on every node in log order, so applying one must be a pure function
//! of the registry state and the command: anything that varies by node or by moment (the wall
//! clock, a random epoch) is fixed by the node that proposes it and carried in the command.

use std::{io::Cursor, sync::Arc};

use serde::{Deserialize, Serialize};
use waypost_model::{
    Epoch, Health, Instance, InstanceId, InstanceRef, Revision, ServiceName, ServicePolicy,
    Timestamp,
};

/// A node's id in the cluster (`--node-id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The Raft types of the control plane.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// One change to the registry, as the log holds it.
///
/// Its JSON is an object tagged by `op`. The derived code (`remote = "Self"`: inherent
/// functions, wrapped by the trait impls of the `wire` module below) is the format; reading
/// takes a faster path for the commands a log is mostly made of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self", tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Names the revision history: the first leader of a new cluster proposes it once; later
    /// ones change nothing.
    Init {
        /// The cluster's epoch.
        epoch: Epoch,
    },
    /// Registers or updates an instance. `instance` is the registration as validated by the
    /// proposer (revision 0, no VIP, passing health); applying it keeps an existing instance's
    /// registration time, health and VIP.
    Register {
        /// The registration.
        instance: Instance,
    },
    /// Removes an instance by id or address.
    Deregister {
        /// Which instance.
        target: InstanceRef,
        /// When the proposer took it (absent in entries written before it was kept).
        #[serde(default)]
        at: Option<Timestamp>,
        /// Who asked (the token's name, with authorization on).
        #[serde(default)]
        by: Option<String>,
    },
    /// Moves an instance into or out of `draining`.
    Drain {
        /// Which instance.
        target: InstanceRef,
        /// `true`: draining; `false`: up.
        draining: bool,
        /// When the proposer took it.
        #[serde(default)]
        at: Option<Timestamp>,
    },
    /// A health check's result that changes the instance's health.
    Check {
        /// Which instance.
        target: InstanceRef,
        /// The new health.
        health: Health,
        /// The check's output (kept when critical).
        output: Option<String>,
        /// When the proposer took it.
        #[serde(default)]
        at: Option<Timestamp>,
    },
    /// The leader found the instance overdue. Applied only if the instance is still the
    /// registration that was overdue: same registration revision and not registered again
    /// since the leader decided (log index `decided_at`), so that an expiry decided before a
    /// re-registration never removes the new one.
    Expire {
        /// Its service.
        service: ServiceName,
        /// Its id.
        id: InstanceId,
        /// The revision that created this registration.
        registration: Revision,
        /// The leader's applied log index when it decided.
        decided_at: u64,
        /// When the leader decided.
        #[serde(default)]
        at: Option<Timestamp>,
    },
    /// Sets (or, with `None`, removes) a service's protection policy; every instance of the
    /// service carries it.
    SetPolicy {
        /// The service.
        service: ServiceName,
        /// The policy.
        policy: Option<ServicePolicy>,
    },
    /// Several commands in one log entry, applied in order: the leader puts every write that
    /// arrived while the previous entry was being made durable into the next entry, so that
    /// one sync serves them all.
    Batch {
        /// The commands.
        commands: Vec<Command>,
    },
}

/// How a [`Command`] is read and written.
///
/// serde reads an internally tagged enum by first copying the whole object into a buffer of
/// its own (it cannot know the variant before it has seen the tag), and reads the variant from
/// that buffer: twice the work, and for a batch the copy holds every command in it. Our writer
/// always puts `op` first, so a `register` or a `batch` whose first key is `op` is read
/// straight into its fields; anything else (another command, or `op` not first, as another
/// writer might send it) is read as JSON and handed to the derived code. Restarting with
/// 100,000 registrations in the log spent about a fifth of its time in that buffer
/// (BENCHMARKS.md, issue 18).
mod wire {
    use std::fmt;

    use serde::{
        Deserialize, Deserializer, Serialize, Serializer,
        de::{self, MapAccess, Visitor, value::MapAccessDeserializer},
    };
    use waypost_model::Instance;

    use super::Command;

    impl Serialize for Command {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            Command::serialize(self, serializer)
        }
    }

    impl<'de> Deserialize<'de> for Command {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_map(CommandVisitor)
        }
    }

    /// The fields of [`Command::Register`], after its tag.
    #[derive(Deserialize)]
    struct Register {
        instance: Instance,
    }

    /// The fields of [`Command::Batch`], after its tag.
    #[derive(Deserialize)]
    struct Batch {
        commands: Vec<Command>,
    }

    struct CommandVisitor;

    impl<'de> Visitor<'de> for CommandVisitor {
        type Value = Command;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a command: an object tagged by \"op\"")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Command, A::Error> {
            let mut seen = serde_json::Map::new();
            if let Some(key) = map.next_key::<String>()? {
                if key == "op" {
                    let op: String = map.next_value()?;
                    match op.as_str() {
                        "register" => {
                            let f = Register::deserialize(MapAccessDeserializer::new(map))?;
                            return Ok(Command::Register {
                                instance: f.instance,
                            });
                        }
                        "batch" => {
                            let f = Batch::deserialize(MapAccessDeserializer::new(map))?;
                            return Ok(Command::Batch {
                                commands: f.commands,
                            });
                        }
                        _ => {}
                    }
                    seen.insert(key, serde_json::Value::String(op));
                } else {
                    seen.insert(key, map.next_value()?);
                }
            }
            while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
                seen.insert(key, value);
            }
            Command::deserialize(serde_json::Value::Object(seen)).map_err(de::Error::custom)
        }
    }
}

/// What applying a command did, returned to the node that proposed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// Nothing visible changed (a membership entry, an init, an expiry that no longer applies).
    Nothing,
    /// Registered (`created`) or updated, or the same registration again (no new revision).
    Registered {
        /// The stored instance.
        instance: Arc<Instance>,
        /// New.
        created: bool,
    },
    /// An instance was removed.
    Removed {
        /// Its service.
        service: ServiceName,
        /// Its id.
        id: InstanceId,
        /// The removal's revision.
        revision: Revision,
    },
    /// An instance's status or health changed (or was already as asked).
    Amended {
        /// The instance as it is now.
        instance: Arc<Instance>,
    },
    /// A service's policy was set or removed; its instances carry it from `revision` on.
    PolicySet {
        /// The head revision after the change.
        revision: Revision,
    },
    /// The command could not be applied.
    Rejected(Rejection),
    /// The replies to a [`Command::Batch`], in its order.
    Batch {
        /// One per command.
        replies: Vec<Reply>,
    },
}

/// Why a command was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// No such instance.
    NotFound {
        /// The service.
        service: ServiceName,
        /// The id or address asked for.
        id: String,
    },
    /// The registry holds its maximum number of instances.
    Full {
        /// The limit.
        max: usize,
    },
    /// The service holds its maximum number of instances.
    ServiceFull {
        /// The service.
        service: ServiceName,
        /// The limit.
        max: usize,
    },
    /// The target did not parse (the proposer checks this first; kept so applying never
    /// panics on a log written by another version).
    Invalid {
        /// Why.
        message: String,
    },
}

/// The registry's state at one applied log position: what a snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// The revision history's identity (0 until the first leader proposes [`Command::Init`]).
    pub epoch: Epoch,
    /// The last revision given.
    pub revision: Revision,
    /// Every instance, shared with the registry: exporting a snapshot copies pointers under
    /// the registry's lock, not instances (a deep copy of 350,000 instances held the lock, and
    /// with it every apply and read, for most of a second).
    pub instances: Vec<Arc<Instance>>,
    /// Every service's VIP, including services without instances (their VIP is kept until
    /// the range runs out), so that a node restored from a snapshot allocates as the others.
    #[serde(default)]
    pub vips: std::collections::BTreeMap<ServiceName, std::net::Ipv4Addr>,
    /// Every service's protection policy, including services without instances.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<ServiceName, ServicePolicy>,
}

/// The state machine's logic, as the store sees it: the registry implements it.
pub trait Machine: Send + Sync + 'static {
    /// Applies one command found at log `index`.
    fn apply(&self, index: u64, command: &Command) -> Reply;
    /// Marks log `index` applied when it held no command (blank and membership entries), so
    /// that readers waiting for an index see it.
    fn applied(&self, index: u64);
    /// The state as it is now.
    fn export(&self) -> Image;
    /// Replaces the whole state (start-up, or a snapshot installed from the leader).
    fn restore(&self, image: Image, index: u64);
}

#[cfg(test)]
mod tests {
    use waypost_model::InstanceRef;

    use super::Command;

    fn register(id: &str) -> Command {
        let instance = serde_json::from_value(serde_json::json!({
            "id": id, "service": "web", "address": "10.0.0.1:80", "host": "10.0.0.1",
            "port": 80, "tags": ["blue"], "metadata": {"zone": "a"}, "weight": 1,
            "status": "up", "ttl_seconds": 30, "registered_at": "2026-01-02T03:04:05.000Z",
            "revision": 0
        }))
        .expect("an instance");
        Command::Register { instance }
    }

    /// What the derived code alone reads from `json` (the inherent function, not the trait's).
    fn derived(json: &serde_json::Value) -> Command {
        Command::deserialize(json.clone()).expect("the derived code reads it")
    }

    #[test]
    fn commands_read_back_as_written_by_either_path() {
        let deregister = Command::Deregister {
            target: InstanceRef {
                service: "web".into(),
                id: Some("a".into()),
                address: None,
            },
            at: None,
            by: Some("ops".into()),
        };
        let commands = [
            Command::Init { epoch: 7 },
            register("a"),
            deregister.clone(),
            Command::Batch {
                commands: vec![
                    register("b"),
                    deregister,
                    Command::Batch {
                        commands: vec![register("c"), Command::Init { epoch: 1 }],
                    },
                ],
            },
        ];
        for command in commands {
            let text = serde_json::to_string(&command).unwrap();
            assert!(text.starts_with(r#"{"op":"#), "{text}");
            let read: Command = serde_json::from_str(&text).unwrap();
            assert_eq!(read, command);
            assert_eq!(derived(&serde_json::from_str(&text).unwrap()), command);
        }
    }

    #[test]
    fn the_tag_may_come_anywhere_and_unknown_ops_are_refused() {
        let Command::Register { instance } = register("a") else {
            unreachable!()
        };
        let late = serde_json::json!({"instance": instance, "op": "register"});
        let read: Command = serde_json::from_value(late.clone()).unwrap();
        assert_eq!(read, register("a"));
        assert_eq!(read, derived(&late));
        let text = r#"{"commands": [{"epoch": 3, "op": "init"}], "op": "batch"}"#;
        let read: Command = serde_json::from_str(text).unwrap();
        assert_eq!(
            read,
            Command::Batch {
                commands: vec![Command::Init { epoch: 3 }]
            }
        );
        assert!(serde_json::from_str::<Command>(r#"{"op": "reboot"}"#).is_err());
        assert!(serde_json::from_str::<Command>(r#"{"op": "register"}"#).is_err());
        assert!(serde_json::from_str::<Command>("[]").is_err());
    }
}
