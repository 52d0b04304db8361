// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title One-way ETH payment channel used by the ilp-bridge `eth-channel` module.
/// @notice One contract is one channel. The payer deploys it with a deposit, a payee and an expiry, then
/// hands the payee off-ledger claims: EIP-191 `personal_sign` signatures over
/// `keccak256(abi.encodePacked(address(this), amount))`, where `amount` is cumulative. The payee closes the
/// channel with its best claim at any time before the payer reclaims; the payer can top up and extend the
/// expiry at any time, and reclaim what is left once the channel expired or was closed.
contract PaymentChannel {
    /// Who funds the channel and signs claims.
    address public immutable payer;
    /// Who may close the channel with a claim.
    address public immutable payee;
    /// Unix time (seconds) from which the payer may reclaim the deposit.
    uint256 public expiresAt;
    /// Set once by `close` or `reclaim`; a closed channel takes no further deposits or claims.
    bool public closed;

    /// Half the secp256k1 group order: signatures with a larger `s` are malleable copies (EIP-2).
    uint256 private constant HALF_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    event Deposited(uint256 amount, uint256 balance);
    event Extended(uint256 expiresAt);
    event Closed(uint256 paid, uint256 refunded);
    event Reclaimed(uint256 refunded);

    modifier onlyPayer() {
        require(msg.sender == payer, "only payer");
        _;
    }

    constructor(address _payee, uint256 _expiresAt) payable {
        require(_payee != address(0) && _payee != msg.sender, "bad payee");
        require(_expiresAt > block.timestamp, "expiry in the past");
        payer = msg.sender;
        payee = _payee;
        expiresAt = _expiresAt;
        emit Deposited(msg.value, msg.value);
    }

    /// Tops up the deposit.
    function deposit() external payable onlyPayer {
        require(!closed, "closed");
        emit Deposited(msg.value, address(this).balance);
    }

    /// Moves the expiry later (never earlier).
    function extend(uint256 newExpiresAt) external onlyPayer {
        require(!closed, "closed");
        require(newExpiresAt > expiresAt, "not later");
        expiresAt = newExpiresAt;
        emit Extended(newExpiresAt);
    }

    /// The digest the payer signs (after the EIP-191 prefix) for a cumulative `amount`.
    function claimHash(uint256 amount) public view returns (bytes32) {
        return keccak256(abi.encodePacked(address(this), amount));
    }

    /// Whether `signature` is the payer's claim for `amount`.
    function isValidClaim(uint256 amount, bytes calldata signature) public view returns (bool) {
        return recover(claimHash(amount), signature) == payer;
    }

    /// Pays the payee `amount` (capped at the balance) and refunds the rest to the payer. Payee only.
    function close(uint256 amount, bytes calldata signature) external {
        require(msg.sender == payee, "only payee");
        require(!closed, "closed");
        require(isValidClaim(amount, signature), "bad claim");
        closed = true;
        uint256 balance = address(this).balance;
        uint256 paid = amount < balance ? amount : balance;
        (bool ok, ) = payee.call{value: paid}("");
        require(ok, "payee transfer failed");
        uint256 refund = balance - paid;
        if (refund > 0) {
            // A payer that refuses ETH can still pull it with `reclaim`.
            (bool refunded, ) = payer.call{value: refund}("");
            if (!refunded) {
                refund = 0;
            }
        }
        emit Closed(paid, refund);
    }

    /// Returns the whole balance to the payer once the channel expired (or was closed). Payer only.
    function reclaim() external onlyPayer {
        require(closed || block.timestamp >= expiresAt, "not expired");
        closed = true;
        uint256 balance = address(this).balance;
        (bool ok, ) = payer.call{value: balance}("");
        require(ok, "refund failed");
        emit Reclaimed(balance);
    }

    function recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) {
            return address(0);
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (v < 27) {
            v += 27;
        }
        if ((v != 27 && v != 28) || uint256(s) > HALF_ORDER) {
            return address(0);
        }
        bytes32 prefixed = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", digest));
        return ecrecover(prefixed, v, r, s);
    }
}
