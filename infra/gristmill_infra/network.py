"""The environment's VPC: public subnets for the load balancer only, private subnets for the
nodes, and isolated subnets (no route out) for the database, across 2 or 3 zones."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from gristmill_infra.config import NatMode
from gristmill_infra.labels import INTERNAL_ELB_TAG, PUBLIC_ELB_TAG, cluster_tag


@dataclass(frozen=True)
class SubnetPlan:
    public: tuple[str, ...]
    private: tuple[str, ...]
    database: tuple[str, ...]


def plan_subnets(vpc_cidr: str, zone_count: int) -> SubnetPlan:
    """Splits the VPC into one subnet per zone and tier.

    The VPC is cut in eighths: node subnets take one eighth each because the VPC CNI gives
    every pod a VPC address; the last eighth is cut again in eighths for the small public
    (load balancer) and database subnets. Eighths 3 to 6 stay free for later tiers.
    """
    if not 1 <= zone_count <= 3:
        raise ValueError(f"zone_count must be 1 to 3, got {zone_count}")
    vpc = ipaddress.IPv4Network(vpc_cidr)
    eighths = list(vpc.subnets(prefixlen_diff=3))
    small = list(eighths[7].subnets(prefixlen_diff=3))
    return SubnetPlan(
        public=tuple(str(s) for s in small[:zone_count]),
        private=tuple(str(s) for s in eighths[:zone_count]),
        database=tuple(str(s) for s in small[4 : 4 + zone_count]),
    )


@dataclass(frozen=True)
class NetworkArgs:
    environment: str
    cluster_name: str
    vpc_cidr: str
    zones: Sequence[pulumi.Input[str]]
    nat_gateways: NatMode
    region: str


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    database_subnet_ids: list[pulumi.Output[str]]
    plan: SubnetPlan

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gristmill:infra:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        zone_count = len(args.zones)
        self.plan = plan_subnets(args.vpc_cidr, zone_count)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"gristmill-{args.environment}"},
            opts=child,
        )
        # The default security group allows all traffic between its members; empty it so
        # nothing can rely on it by accident.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            tags={"Name": f"gristmill-{args.environment}-default-unused"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            f"{name}-igw",
            vpc_id=vpc.id,
            tags={"Name": f"gristmill-{args.environment}"},
            opts=child,
        )

        shared = {cluster_tag(args.cluster_name): "shared"}
        public_subnets = []
        private_subnets = []
        database_subnets = []
        for i, zone in enumerate(args.zones):
            public_subnets.append(
                aws.ec2.Subnet(
                    f"{name}-public-{i}",
                    vpc_id=vpc.id,
                    cidr_block=self.plan.public[i],
                    availability_zone=zone,
                    # Only the load balancer lives here; nothing gets a public address.
                    map_public_ip_on_launch=False,
                    tags={
                        "Name": f"gristmill-{args.environment}-public-{i}",
                        "gristmill.io/tier": "public",
                        PUBLIC_ELB_TAG: "1",
                        **shared,
                    },
                    opts=child,
                )
            )
            private_subnets.append(
                aws.ec2.Subnet(
                    f"{name}-private-{i}",
                    vpc_id=vpc.id,
                    cidr_block=self.plan.private[i],
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags={
                        "Name": f"gristmill-{args.environment}-private-{i}",
                        "gristmill.io/tier": "private",
                        INTERNAL_ELB_TAG: "1",
                        **shared,
                    },
                    opts=child,
                )
            )
            database_subnets.append(
                aws.ec2.Subnet(
                    f"{name}-database-{i}",
                    vpc_id=vpc.id,
                    cidr_block=self.plan.database[i],
                    availability_zone=zone,
                    map_public_ip_on_launch=False,
                    tags={
                        "Name": f"gristmill-{args.environment}-database-{i}",
                        "gristmill.io/tier": "database",
                    },
                    opts=child,
                )
            )

        public_rt = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
            tags={"Name": f"gristmill-{args.environment}-public"},
            opts=child,
        )
        for i, subnet in enumerate(public_subnets):
            aws.ec2.RouteTableAssociation(
                f"{name}-public-rta-{i}",
                subnet_id=subnet.id,
                route_table_id=public_rt.id,
                opts=child,
            )

        # One NAT gateway per zone keeps nodes online when a zone fails; "single" trades that
        # for about a third of the NAT cost (see the cost table in the docs).
        nat_count = zone_count if args.nat_gateways == "perAz" else 1
        nats = []
        for i in range(nat_count):
            eip = aws.ec2.Eip(
                f"{name}-nat-eip-{i}",
                domain="vpc",
                tags={"Name": f"gristmill-{args.environment}-nat-{i}"},
                opts=child,
            )
            nats.append(
                aws.ec2.NatGateway(
                    f"{name}-nat-{i}",
                    allocation_id=eip.id,
                    subnet_id=public_subnets[i].id,
                    tags={"Name": f"gristmill-{args.environment}-nat-{i}"},
                    opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
                )
            )

        private_rts = []
        for i, subnet in enumerate(private_subnets):
            rt = aws.ec2.RouteTable(
                f"{name}-private-rt-{i}",
                vpc_id=vpc.id,
                routes=[
                    aws.ec2.RouteTableRouteArgs(
                        cidr_block="0.0.0.0/0", nat_gateway_id=nats[i % nat_count].id
                    )
                ],
                tags={"Name": f"gristmill-{args.environment}-private-{i}"},
                opts=child,
            )
            private_rts.append(rt)
            aws.ec2.RouteTableAssociation(
                f"{name}-private-rta-{i}", subnet_id=subnet.id, route_table_id=rt.id, opts=child
            )

        # The database subnets only reach the VPC itself.
        database_rt = aws.ec2.RouteTable(
            f"{name}-database-rt",
            vpc_id=vpc.id,
            tags={"Name": f"gristmill-{args.environment}-database"},
            opts=child,
        )
        for i, subnet in enumerate(database_subnets):
            aws.ec2.RouteTableAssociation(
                f"{name}-database-rta-{i}",
                subnet_id=subnet.id,
                route_table_id=database_rt.id,
                opts=child,
            )

        # Data store traffic (uploads, step inputs, image layers) skips the NAT gateways,
        # which bill per GB processed; the gateway endpoint is free.
        aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in private_rts],
            tags={"Name": f"gristmill-{args.environment}-s3"},
            opts=child,
        )

        self.vpc_id = vpc.id
        self.public_subnet_ids = [s.id for s in public_subnets]
        self.private_subnet_ids = [s.id for s in private_subnets]
        self.database_subnet_ids = [s.id for s in database_subnets]
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
                "database_subnet_ids": self.database_subnet_ids,
            }
        )
