//! Parameters of the read endpoints for the OpenAPI document: each with its description and
//! the schema `waypost_model::schema` builds from the limits (the derive would drop the
//! description, the style and the required flag of a parameter whose schema is built).

use utoipa::openapi::{
    RefOr, Required, Schema,
    path::{Parameter, ParameterBuilder, ParameterIn, ParameterStyle},
};

/// A parameter named `name` in `location`.
pub(crate) fn param(
    name: &str,
    location: ParameterIn,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> Parameter {
    let required = if location == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(location)
        .required(required)
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A repeatable query parameter (`?tag=a&tag=b`): an array, in form style, exploded.
pub(crate) fn repeated(
    name: &str,
    description: &str,
    schema: impl Into<RefOr<Schema>>,
) -> Parameter {
    let mut p = param(name, ParameterIn::Query, description, schema);
    p.style = Some(ParameterStyle::Form);
    p.explode = Some(true);
    p
}

/// The parameters of a read that may block (`index`, `wait`) and of its consistency
/// (`stale`, `consistent`); `what` says what must change ("this service", "anything").
pub(crate) fn blocking(what: &str) -> [Parameter; 4] {
    [
        param(
            "index",
            ParameterIn::Query,
            &format!(
                "Blocking query: hold the answer until {what} changes after revision `index` \
                 (`0` answers at once)."
            ),
            waypost_model::schema::revision(),
        ),
        param(
            "wait",
            ParameterIn::Query,
            "Blocking query: the longest to hold the answer.",
            waypost_model::schema::wait(),
        ),
        param(
            "stale",
            ParameterIn::Query,
            "Answer from this node's applied state at once, without confirming with the \
             cluster's leader that it is current (`?stale` or `?stale=true`); it still answers \
             when no leader is known. By default reads are linearizable.",
            flag_schema(),
        ),
        param(
            "consistent",
            ParameterIn::Query,
            "Confirm with a majority of the cluster before answering, even where the leader's \
             lease would do (`?consistent` or `?consistent=true`). By default the leader answers \
             from its own state while a majority acknowledged it within a third of the election \
             timeout, and other nodes ask the leader for its read index. With `stale` too, \
             `consistent` wins.",
            flag_schema(),
        ),
    ]
}

/// A query flag: `?name`, `name=true` or `name=false`.
fn flag_schema() -> utoipa::openapi::ObjectBuilder {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(["", "true", "false"]))
}
