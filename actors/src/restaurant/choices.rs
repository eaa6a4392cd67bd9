//! # Choices: a menu's option groups and options, indexed for pricing and rendering
//!
//! A dish's option groups (a size, a doneness, extras) and their options, as last committed, with the
//! lookups an order needs: which groups a dish has (in menu order), which options a group has, and
//! the group an option belongs to. Rebuilt from the rows whenever the admin-owned state is reloaded;
//! only an option's availability changes in place (the kitchen's sold-out toggle).

use std::collections::HashMap;

use indexmap::IndexMap;
use scan2order_schema::options::{MenuOption, OptionGroup};
use scan2order_schema::wire::OptionGroupView;
use uuid::Uuid;

#[derive(Default)]
pub(crate) struct Choices {
    groups: IndexMap<Uuid, OptionGroup>,
    options: IndexMap<Uuid, MenuOption>,
    /// Group ids of each dish, in menu order.
    by_item: HashMap<Uuid, Vec<Uuid>>,
    /// Option ids of each group, in menu order.
    by_group: HashMap<Uuid, Vec<Uuid>>,
}

impl Choices {
    /// Indexes the rows; they come sorted by position (then creation), which is menu order.
    pub(crate) fn new(groups: Vec<OptionGroup>, options: Vec<MenuOption>) -> Choices {
        let mut by_item: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for g in &groups {
            by_item.entry(g.menu_item_id).or_default().push(g.id);
        }
        let mut by_group: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
        for o in &options {
            by_group.entry(o.group_id).or_default().push(o.id);
        }
        Choices {
            groups: groups.into_iter().map(|g| (g.id, g)).collect(),
            options: options.into_iter().map(|o| (o.id, o)).collect(),
            by_item,
            by_group,
        }
    }

    /// The groups of a dish, in menu order.
    pub(crate) fn groups_of(&self, item: Uuid) -> impl Iterator<Item = &OptionGroup> {
        self.by_item
            .get(&item)
            .into_iter()
            .flatten()
            .filter_map(|g| self.groups.get(g))
    }

    /// The options of a group, in menu order.
    pub(crate) fn options_of(&self, group: Uuid) -> impl Iterator<Item = &MenuOption> {
        self.by_group
            .get(&group)
            .into_iter()
            .flatten()
            .filter_map(|o| self.options.get(o))
    }

    pub(crate) fn option(&self, id: Uuid) -> Option<&MenuOption> {
        self.options.get(&id)
    }

    pub(crate) fn option_mut(&mut self, id: Uuid) -> Option<&mut MenuOption> {
        self.options.get_mut(&id)
    }

    pub(crate) fn group(&self, id: Uuid) -> Option<&OptionGroup> {
        self.groups.get(&id)
    }

    /// A dish's choices as the guest menu shows them.
    pub(crate) fn views_of(&self, item: Uuid) -> Vec<OptionGroupView> {
        self.groups_of(item)
            .map(|g| OptionGroupView {
                id: g.id.into(),
                name: g.name.clone(),
                min: g.min_choices,
                max: g.max_choices,
                options: self.options_of(g.id).map(MenuOption::to_view).collect(),
            })
            .collect()
    }
}
