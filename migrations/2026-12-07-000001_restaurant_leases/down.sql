DROP TABLE cluster_nodes;
DROP TABLE restaurant_leases;
