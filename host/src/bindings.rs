//! Host bindings for the Spin interfaces our components import (and nothing else): MySQL,
//! variables and key-value from `fermyon:spin@2.0.0`, as spin-sdk 5.2 imports them. WIT files
//! come from the project's `wit/deps/spin@2.0.0`.

wasmtime::component::bindgen!({
    inline: r#"
        package local:spin-host;
        world spin-imports {
            import fermyon:spin/mysql@2.0.0;
            import fermyon:spin/variables@2.0.0;
            import fermyon:spin/key-value@2.0.0;
        }
    "#,
    path: "../wit/deps/spin@2.0.0",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/mysql.connection": crate::mysql::MysqlConnection,
        "fermyon:spin/key-value.store": crate::key_value::KeyValueStore,
    },
});

pub use fermyon::spin::{key_value, mysql, rdbms_types, variables};
