from __future__ import annotations

import ipaddress

import pytest

from gristmill_infra.network import Network, NetworkArgs, plan_subnets
from tests.infra.helpers import run_pulumi
from tests.infra.mocks import ZONES, GristmillMocks


@pytest.mark.parametrize(
    ("cidr", "zones"), [("10.0.0.0/16", 3), ("10.40.0.0/16", 2), ("172.16.0.0/20", 3)]
)
def test_subnet_plan_fits_the_vpc_without_overlap(cidr: str, zones: int) -> None:
    plan = plan_subnets(cidr, zones)
    vpc = ipaddress.IPv4Network(cidr)
    subnets = [ipaddress.IPv4Network(s) for s in (*plan.public, *plan.private, *plan.database)]
    assert len(plan.public) == len(plan.private) == len(plan.database) == zones
    assert all(s.subnet_of(vpc) for s in subnets)
    for i, a in enumerate(subnets):
        for b in subnets[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def test_node_subnets_are_the_large_ones() -> None:
    plan = plan_subnets("10.0.0.0/16", 3)
    assert plan.private == ("10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19")
    assert plan.public == ("10.0.224.0/22", "10.0.228.0/22", "10.0.232.0/22")
    assert plan.database == ("10.0.240.0/22", "10.0.244.0/22", "10.0.248.0/22")


def build(nat: str = "perAz", zones: int = 3) -> None:
    def program() -> object:
        network = Network(
            "dev-network",
            NetworkArgs(
                environment="dev",
                cluster_name="gristmill-dev",
                vpc_cidr="10.0.0.0/16",
                zones=ZONES[:zones],
                nat_gateways=nat,  # type: ignore[arg-type]
                region="eu-west-3",
            ),
        )
        return network.vpc_id

    run_pulumi(program)


def subnets(mocks: GristmillMocks, tier: str) -> list[dict[str, object]]:
    return [
        r.inputs
        for r in mocks.of_type("aws:ec2/subnet:Subnet")
        if r.inputs["tags"]["gristmill.io/tier"] == tier
    ]


def test_public_subnets_are_for_the_load_balancer_only(mocks: GristmillMocks) -> None:
    build()
    public = subnets(mocks, "public")
    assert [s["availabilityZone"] for s in public] == ZONES
    for subnet in public:
        assert subnet["mapPublicIpOnLaunch"] is False
        assert subnet["tags"]["kubernetes.io/role/elb"] == "1"
        assert subnet["tags"]["kubernetes.io/cluster/gristmill-dev"] == "shared"


def test_nodes_and_database_are_in_private_subnets(mocks: GristmillMocks) -> None:
    build()
    private = subnets(mocks, "private")
    database = subnets(mocks, "database")
    assert len(private) == len(database) == 3
    for subnet in (*private, *database):
        assert subnet["mapPublicIpOnLaunch"] is False
        assert "kubernetes.io/role/elb" not in subnet["tags"]
    assert all(s["tags"]["kubernetes.io/role/internal-elb"] == "1" for s in private)


def test_private_subnets_leave_through_nat_and_database_subnets_not_at_all(
    mocks: GristmillMocks,
) -> None:
    build()
    tables = {r.name: r.inputs for r in mocks.of_type("aws:ec2/routeTable:RouteTable")}
    assert tables["dev-network-public-rt"]["routes"][0]["gatewayId"] == "dev-network-igw-id"
    for i in range(3):
        (route,) = tables[f"dev-network-private-rt-{i}"]["routes"]
        assert route == {"cidrBlock": "0.0.0.0/0", "natGatewayId": f"dev-network-nat-{i}-id"}
    assert not tables["dev-network-database-rt"].get("routes")


@pytest.mark.parametrize(("mode", "count"), [("perAz", 3), ("single", 1)])
def test_nat_gateways_per_zone_or_single(mocks: GristmillMocks, mode: str, count: int) -> None:
    build(nat=mode)
    assert len(mocks.of_type("aws:ec2/natGateway:NatGateway")) == count
    private_routes = [
        r.inputs["routes"][0]["natGatewayId"]
        for r in mocks.of_type("aws:ec2/routeTable:RouteTable")
        if "private" in r.name
    ]
    assert len(set(private_routes)) == count


def test_s3_traffic_bypasses_nat(mocks: GristmillMocks) -> None:
    build(zones=2)
    endpoint = mocks.one("aws:ec2/vpcEndpoint:VpcEndpoint").inputs
    assert endpoint["serviceName"] == "com.amazonaws.eu-west-3.s3"
    assert endpoint["vpcEndpointType"] == "Gateway"
    assert sorted(endpoint["routeTableIds"]) == [
        "dev-network-private-rt-0-id",
        "dev-network-private-rt-1-id",
    ]


def test_default_security_group_is_emptied(mocks: GristmillMocks) -> None:
    build()
    group = mocks.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup").inputs
    assert not group.get("ingress") and not group.get("egress")
